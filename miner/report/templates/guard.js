/* Runs first: records script errors, failed resources and CSP violations in the data-errors attribute of the root element. */
(function () {
  "use strict";
  var seen = [];
  function note(message) {
    seen.push(String(message).slice(0, 300));
    document.documentElement.setAttribute("data-errors", seen.join(" | "));
  }
  window.addEventListener("error", function (e) {
    var t = e.target;
    note(e.message || ("failed to load " + ((t && (t.src || t.href)) || "a resource")));
  }, true);
  window.addEventListener("unhandledrejection", function (e) { note("unhandled rejection: " + e.reason); });
  document.addEventListener("securitypolicyviolation", function (e) {
    note("CSP blocked " + e.violatedDirective + " " + (e.blockedURI || "inline"));
  });
  var original = console.error;
  console.error = function () {
    note(Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
  window.__reportNote = note;
})();
