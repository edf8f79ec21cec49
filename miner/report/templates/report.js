/* Report pages: builds the overview's unit index (filters, sorting, paging) from the JSON island
   #units-data, writing untrusted values with textContent only; then marks <body data-ready="ok">.
   Keyboard: a link with data-key="K" is followed when K is pressed outside a text field (unit pages of
   `miner serve`: arrows for the neighbouring units and layers). */
(function () {
  "use strict";
  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (e.altKey || e.ctrlKey || e.metaKey || (t && /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
    var links = document.querySelectorAll("a[data-key]");
    for (var i = 0; i < links.length; i++) {
      if (links[i].getAttribute("data-key") === e.key) {
        e.preventDefault();
        window.location.href = links[i].getAttribute("href");
        return;
      }
    }
  });
})();
(function () {
  "use strict";
  var PAGE = 200;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function fmt(v, digits) {
    if (v === null || v === undefined || (typeof v === "number" && !isFinite(v))) return "\u2013";
    if (typeof v !== "number") return String(v);
    var a = Math.abs(v);
    if (a >= 1000) return Math.round(v).toLocaleString("en-US");
    if (a >= 1) return v.toFixed(Math.max(1, (digits || 3) - 1)).replace(/\.?0+$/, "");
    return v.toPrecision(digits || 3).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
  }

  function pct(v) { return v === null || v === undefined ? "\u2013" : (100 * v).toFixed(0) + "%"; }

  function label(u) { return (u.site === "hidden" ? "" : u.site + ":") + u.layer + ":" + u.idx; }

  function buildIndex(data) {
    var cols = data.columns;
    var units = data.rows.map(function (row) {
      var u = {};
      for (var i = 0; i < cols.length; i++) u[cols[i]] = row[i];
      u.words = (u.top_words || []).join(" ").toLowerCase();
      u.label = label(u);
      return u;
    });
    var $ = function (id) { return document.getElementById(id); };
    var fLayer = $("f-layer"), fDomain = $("f-domain"), fSent = $("f-sentiment"), fSel = $("f-sel"),
        fQuery = $("f-q"), count = $("f-count"), body = $("index-body"), more = $("f-more");
    var state = { key: "unit_id", dir: 1, limit: PAGE };

    var layers = {}, domains = {};
    units.forEach(function (u) {
      layers[u.site + ":" + u.layer] = { site: u.site, layer: u.layer };
      if (u.dominant_domain !== null) domains[u.dominant_domain] = (domains[u.dominant_domain] || 0) + 1;
    });
    Object.keys(layers).sort(function (a, b) {
      var x = layers[a], y = layers[b];
      return x.site === y.site ? x.layer - y.layer : (x.site === "hidden" ? -1 : 1);
    }).forEach(function (k) {
      var o = el("option", null, (layers[k].site === "hidden" ? "layer " : layers[k].site + " layer ") + layers[k].layer);
      o.value = k;
      fLayer.appendChild(o);
    });
    Object.keys(domains).sort().forEach(function (d) {
      var o = el("option", null, d + " (" + domains[d] + ")");
      o.value = d;
      fDomain.appendChild(o);
    });

    function matches(u) {
      if (fLayer.value && fLayer.value !== u.site + ":" + u.layer) return false;
      if (fDomain.value && fDomain.value !== u.dominant_domain) return false;
      var s = fSent.value, m = u.sentiment_mean, sd = u.sentiment_std;
      if (s === "positive" && !(m !== null && m >= 0.5)) return false;
      if (s === "negative" && !(m !== null && m <= -0.5)) return false;
      if (s === "mixed" && !(sd !== null && sd >= 0.5)) return false;
      if (s === "labelled" && m === null) return false;
      var minSel = parseFloat(fSel.value);
      if (!isNaN(minSel) && !(u.pos_selectivity !== null && u.pos_selectivity >= minSel)) return false;
      var q = fQuery.value.trim().toLowerCase();
      if (q) {
        var terms = q.split(/\s+/);
        for (var i = 0; i < terms.length; i++) {
          var t = terms[i];
          if (u.words.indexOf(t) < 0 && u.label !== t && String(u.unit_id) !== t) return false;
        }
      }
      return true;
    }

    function compare(a, b) {
      var x = a[state.key], y = b[state.key];
      if (Array.isArray(x)) { x = x.join(" "); y = (y || []).join(" "); }
      if (x === null || x === undefined) return (y === null || y === undefined) ? a.unit_id - b.unit_id : 1;
      if (y === null || y === undefined) return -1;
      if (x < y) return -state.dir;
      if (x > y) return state.dir;
      return a.unit_id - b.unit_id;
    }

    function row(u) {
      var tr = el("tr");
      var first = el("td", "mono");
      if (u.page) {
        var a = el("a", null, u.label);
        a.href = "unit-" + Number(u.unit_id) + ".html";
        first.appendChild(a);
      } else {
        first.textContent = u.label;
      }
      tr.appendChild(first);
      tr.appendChild(el("td", "n", u.unit_id));
      var dom = el("td", null, u.dominant_domain === null ? "\u2013" : u.dominant_domain);
      if (u.dominant_domain_share !== null) dom.appendChild(el("span", "muted small", " " + pct(u.dominant_domain_share)));
      tr.appendChild(dom);
      tr.appendChild(el("td", "n", fmt(u.sentiment_mean, 2)));
      tr.appendChild(el("td", "n", fmt(u.sentiment_std, 2)));
      var sel = el("td", "n", fmt(u.pos_selectivity, 3));
      if (u.pos_selectivity_tag) sel.appendChild(el("span", "muted small", " " + u.pos_selectivity_tag));
      tr.appendChild(sel);
      tr.appendChild(el("td", "n", fmt(u.noun_rel, 3)));
      tr.appendChild(el("td", "n", fmt(u.verb_rel, 3)));
      tr.appendChild(el("td", "n", fmt(u.adj_rel, 3)));
      tr.appendChild(el("td", "n", fmt(u.avg_length, 3)));
      tr.appendChild(el("td", "words", (u.top_words || []).join(", ")));
      tr.appendChild(el("td", "n", u.cluster === null ? "\u2013" : u.cluster));
      return tr;
    }

    function draw() {
      var hits = units.filter(matches).sort(compare);
      body.textContent = "";
      var frag = document.createDocumentFragment();
      hits.slice(0, state.limit).forEach(function (u) { frag.appendChild(row(u)); });
      body.appendChild(frag);
      count.textContent = hits.length.toLocaleString("en-US") + " of " + units.length.toLocaleString("en-US") +
        " units" + (hits.length > state.limit ? " (showing " + state.limit.toLocaleString("en-US") + ")" : "");
      more.hidden = hits.length <= state.limit;
      var heads = document.querySelectorAll("#index th[data-key]");
      for (var i = 0; i < heads.length; i++) {
        heads[i].classList.remove("sorted-asc", "sorted-desc");
        if (heads[i].getAttribute("data-key") === state.key) heads[i].classList.add(state.dir > 0 ? "sorted-asc" : "sorted-desc");
      }
    }

    // Filters live in the URL hash too (#layer=hidden:3&domain=news&q=lol&sort=-pos_selectivity), so a
    // filtered view can be bookmarked or shared.
    var fields = { layer: fLayer, domain: fDomain, sentiment: fSent, sel: fSel, q: fQuery };
    function readHash() {
      var params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
      Object.keys(fields).forEach(function (k) { if (params.has(k)) fields[k].value = params.get(k); });
      var sort = params.get("sort");
      if (sort && /^-?[a-z_]+$/.test(sort)) { state.dir = sort.charAt(0) === "-" ? -1 : 1; state.key = sort.replace(/^-/, ""); }
    }
    function writeHash() {
      var params = new URLSearchParams();
      Object.keys(fields).forEach(function (k) { if (fields[k].value) params.set(k, fields[k].value); });
      if (state.key !== "unit_id" || state.dir !== 1) params.set("sort", (state.dir < 0 ? "-" : "") + state.key);
      try { history.replaceState(null, "", "#" + params.toString()); } catch (e) { /* file: URLs in some browsers */ }
    }
    readHash();
    Object.keys(fields).forEach(function (k) {
      fields[k].addEventListener("input", function () { state.limit = PAGE; writeHash(); draw(); });
    });
    more.addEventListener("click", function () { state.limit += PAGE; draw(); });
    var heads = document.querySelectorAll("#index th[data-key]");
    for (var i = 0; i < heads.length; i++) {
      heads[i].addEventListener("click", function (e) {
        var key = e.currentTarget.getAttribute("data-key");
        if (state.key === key) state.dir = -state.dir;
        else { state.key = key; state.dir = key === "unit_id" || key === "dominant_domain" ? 1 : -1; }
        writeHash();
        draw();
      });
    }
    draw();
  }

  try {
    var island = document.getElementById("units-data");
    if (island) buildIndex(JSON.parse(island.textContent));
    document.body.setAttribute("data-ready", "ok");
  } catch (err) {
    if (window.__reportNote) window.__reportNote("report.js: " + (err && err.message ? err.message : err));
    document.body.setAttribute("data-ready", "failed");
  }
})();
