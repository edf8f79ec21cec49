"""One concept's probes and what proves their rankings: the all-layer and per-layer probes, the neuron rankings,
top / random / bottom retraining, the minimal subset and the control task, as rows of the probing tables."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from miner.config import ProbingOptions
from miner.model.layout import LayerSlice
from miner.probing.concepts import ConceptExamples
from miner.probing.evaluate import control_labels, evaluate_subsets, minimal_subset, select_units, selectivity
from miner.probing.examples import DEV, TEST, TRAIN
from miner.probing.extraction import load_rows
from miner.probing.probe import ProbeOptions, ProbeSelection, accuracy, majority_baseline, select_probe, train_probe
from miner.probing.rankings import Ranking, ap_ranking, lca_ranking, probeless_ranking

log = logging.getLogger(__name__)


@dataclass
class ProbeTables:
    """Rows of the probing tables (column -> values), appended to concept by concept."""

    probes: list[dict] = field(default_factory=list)
    probe_accuracy: list[dict] = field(default_factory=list)
    neuron_rankings: dict[str, list] = field(default_factory=lambda: {
        "probe_id": [], "method": [], "class": [], "unit_id": [], "rank": [], "score": []})
    probe_subsets: list[dict] = field(default_factory=list)


@dataclass
class _Data:
    x: tuple[np.ndarray, np.ndarray, np.ndarray]
    y: tuple[np.ndarray, np.ndarray, np.ndarray]

    def splits(self, cols: np.ndarray | slice | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                      np.ndarray, np.ndarray, np.ndarray]:
        """(x_train, y_train, x_dev, y_dev, x_test, y_test), on the columns `cols` (all by default)."""
        xs = self.x if cols is None else tuple(a[:, cols] for a in self.x)
        return xs[0], self.y[0], xs[1], self.y[1], xs[2], self.y[2]


def probe_options(options: ProbingOptions, device: str, threads: int | None) -> ProbeOptions:
    """The trainer's options from the job's probe section."""
    return ProbeOptions(epochs=options.epochs, seed=options.seed, device=device, l1_grid=tuple(options.l1_grid),
                        l2_grid=tuple(options.l2_grid), threads=threads)


def _accuracy_rows(probe_id: str, evaluation: str, ranking: str | None, k: float | None, units: int,
                   dev: float | None, y_test: np.ndarray, pred: np.ndarray | None, test: float, classes: list[str],
                   ) -> list[dict]:
    """One overall row (class NULL) and, when predictions are given, one row per class."""
    rows = [{"probe_id": probe_id, "evaluation": evaluation, "ranking": ranking, "k_percent": k, "units": units,
             "class": None, "dev_accuracy": dev, "test_accuracy": test, "examples": int(len(y_test))}]
    if pred is not None:
        _, per_class = accuracy(y_test, pred, len(classes))
        counts = np.bincount(y_test, minlength=len(classes))
        rows += [{"probe_id": probe_id, "evaluation": evaluation, "ranking": ranking, "k_percent": k,
                  "units": units, "class": c, "dev_accuracy": None,
                  "test_accuracy": None if np.isnan(per_class[i]) else float(per_class[i]),
                  "examples": int(counts[i])} for i, c in enumerate(classes)]
    return rows


def _probe_row(probe_id: str, ex: ConceptExamples, scope: str, site: str | None, layer: int | None,
               sel: ProbeSelection, test: float, maj: float, data: _Data, seconds: float, subword: str) -> dict:
    return {"probe_id": probe_id, "concept": ex.name, "level": ex.level, "scope": scope, "site": site,
            "layer": layer, "units": int(sel.probe.weights.shape[1]), "classes": len(ex.classes),
            "class_names": list(ex.classes), "train_rows": int(len(data.y[0])), "dev_rows": int(len(data.y[1])),
            "test_rows": int(len(data.y[2])), "l1": sel.l1, "l2": sel.l2, "dev_accuracy": sel.dev_accuracy,
            "test_accuracy": test, "majority_accuracy": maj, "control_accuracy": None, "selectivity": None,
            "subword": subword if ex.level == "token" else None,
            "dropped_classes": [f"{c} ({n})" for c, n in ex.dropped_classes.items()], "seconds": round(seconds, 3)}


def _rank_rows(tables: ProbeTables, probe_id: str, ranking: Ranking, classes: list[str]) -> None:
    nr = tables.neuron_rankings
    for cls, uo in [(None, ranking.overall), *zip(classes, ranking.per_class)]:
        n = len(uo.order)
        nr["probe_id"] += [probe_id] * n
        nr["method"] += [ranking.method] * n
        nr["class"] += [cls] * n
        nr["unit_id"] += uo.order.tolist()
        nr["rank"] += list(range(1, n + 1))
        nr["score"] += [float(v) for v in uo.scores[uo.order]]


def probe_concept(ex: ConceptExamples, folder: Path, slices: list[LayerSlice], options: ProbingOptions,
                  popts: ProbeOptions, spb: int, tables: ProbeTables) -> dict:
    """Train and evaluate every probe of one concept; rows go into `tables`; returns the concept's summary."""
    t0 = time.monotonic()
    masks = [ex.splits == s for s in (TRAIN, DEV, TEST)]
    x = tuple(load_rows(folder, ex, m, spb) for m in masks)
    y = tuple(ex.labels[m] for m in masks)
    data = _Data(x, y)  # type: ignore[arg-type]
    classes, n_cls = ex.classes, len(ex.classes)
    units = x[0].shape[1]
    maj = majority_baseline(y[0], y[2])
    # the all-layer probe (lambdas chosen on dev)
    pid = f"{ex.name}:all"
    t = time.monotonic()
    sel = select_probe(x[0], y[0], x[1], y[1], n_cls, popts)
    pred = sel.probe.predict(x[2])
    test_acc, _ = accuracy(y[2], pred, n_cls)
    row = _probe_row(pid, ex, "all", None, None, sel, test_acc, maj, data, time.monotonic() - t, options.subword)
    tables.probe_accuracy += _accuracy_rows(pid, "probe", None, None, units, sel.dev_accuracy, y[2], pred, test_acc,
                                            classes)
    log.info("%s: all %d units, test accuracy %.3f (majority %.3f; l1 %g, l2 %g)", ex.name, units, test_acc, maj,
             sel.l1, sel.l2)
    # rankings and the evaluations that prove them
    rankings: list[Ranking] = []
    for method in options.rankings:
        if method == "lca":
            rankings.append(lca_ranking(sel.probe.weights))
        elif method == "probeless":
            rankings.append(probeless_ranking(x[0], y[0], n_cls))
        else:
            rankings.append(ap_ranking(x[0], y[0], n_cls))
    summary: dict = {"test_accuracy": test_acc, "majority_accuracy": maj, "units": units, "rankings": {}}
    for ranking in rankings:
        _rank_rows(tables, pid, ranking, classes)
        results = evaluate_subsets(*data.splits(), n_cls, ranking.overall.order, list(options.k_percent), sel.l1,
                                   sel.l2, popts, options.seed)
        for r in results:
            if r.which == "all" and ranking is not rankings[0]:
                continue  # the same probe for every ranking: one row
            tables.probe_accuracy += _accuracy_rows(pid, r.which, None if r.which == "all" else ranking.method,
                                                    r.k_percent, len(r.units), r.dev_accuracy, y[2], None,
                                                    r.test_accuracy, classes)
        best = minimal_subset(*data.splits(), n_cls, ranking.overall.order, sel.l1, sel.l2, popts,
                              options.subset_target)
        tables.probe_subsets.append({
            "probe_id": pid, "ranking": ranking.method, "target": options.subset_target, "units": best.size,
            "unit_share": best.size / units, "dev_accuracy": best.dev_accuracy, "test_accuracy": best.test_accuracy,
            "full_dev_accuracy": best.full_dev_accuracy, "probes_trained": len(best.tried)})
        summary["rankings"][ranking.method] = {
            "subset_units": best.size, **{f"{r.which}_{r.k_percent:g}": round(r.test_accuracy, 4) for r in results}}
    # control task: a random label per word type (token concepts)
    if options.control and ex.level == "token":
        ctl = control_labels([w.lower() for w in ex.row_text], ex.labels, n_cls, options.seed)
        cy = tuple(ctl[m] for m in masks)
        probe = train_probe(x[0], cy[0], n_cls, sel.l1, sel.l2, popts, x[1], cy[1])
        c_acc, _ = accuracy(cy[2], probe.predict(x[2]), n_cls)
        row["control_accuracy"], row["selectivity"] = c_acc, selectivity(test_acc, c_acc)
        tables.probe_accuracy += _accuracy_rows(pid, "control", None, None, units, None, cy[2], None, c_acc, classes)
        for k in options.k_percent:  # selectivity of the top k% of the first ranking
            top = select_units(rankings[0].overall.order, units, k, "top", options.seed)
            p_task = train_probe(x[0][:, top], y[0], n_cls, sel.l1, sel.l2, popts, x[1][:, top], y[1])
            p_ctl = train_probe(x[0][:, top], cy[0], n_cls, sel.l1, sel.l2, popts, x[1][:, top], cy[1])
            t_acc, _ = accuracy(y[2], p_task.predict(x[2][:, top]), n_cls)
            k_acc, _ = accuracy(cy[2], p_ctl.predict(x[2][:, top]), n_cls)
            tables.probe_accuracy += _accuracy_rows(pid, "control_top", rankings[0].method, float(k), len(top), None,
                                                    cy[2], None, k_acc, classes)
            summary[f"selectivity_top_{k:g}"] = round(selectivity(t_acc, k_acc), 4)
        summary["control_accuracy"], summary["selectivity"] = c_acc, row["selectivity"]
    tables.probes.append(row)
    # one probe per layer (and site)
    if options.per_layer and len(slices) > 1:
        for site, layer, lo, hi in slices:
            t = time.monotonic()
            lid = f"{ex.name}:{site}:{layer}"
            cols = slice(lo, hi)
            xs = data.splits(cols)
            lsel = select_probe(xs[0], xs[1], xs[2], xs[3], n_cls, popts)
            lpred = lsel.probe.predict(xs[4])
            l_acc, _ = accuracy(y[2], lpred, n_cls)
            tables.probes.append(_probe_row(lid, ex, "layer", site, layer, lsel, l_acc, maj, data,
                                            time.monotonic() - t, options.subword))
            tables.probe_accuracy += _accuracy_rows(lid, "probe", None, None, hi - lo, lsel.dev_accuracy, y[2], lpred,
                                                    l_acc, classes)
            log.info("%s: %s layer %d, test accuracy %.3f", ex.name, site, layer, l_acc)
    summary["seconds"] = round(time.monotonic() - t0, 3)
    return summary
