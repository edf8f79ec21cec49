"""Seconds for the probe's lambda grid + full-train refit (select_probe) on synthetic structured data; one JSON line."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from miner.probing.probe import ProbeOptions, accuracy, majority_baseline, select_probe


def synthetic(n: int, units: int, classes: int, informative: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Zipf-distributed labels; class-dependent means on the first `informative` units, unit noise elsewhere."""
    rng = np.random.default_rng(seed)
    freq = 1.0 / np.arange(1, classes + 1)
    y = rng.choice(classes, size=n, p=freq / freq.sum()).astype(np.int64)
    means = np.random.default_rng(1234).normal(0.0, 0.25, size=(classes, informative)).astype(np.float32)
    x = rng.standard_normal(size=(n, units), dtype=np.float32)
    x[:, :informative] += means[y]
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000, help="train rows")
    parser.add_argument("--dev", type=int, default=10_000, help="dev rows (and test rows)")
    parser.add_argument("--units", type=int, default=2304, help="features per row (U)")
    parser.add_argument("--classes", type=int, default=45)
    parser.add_argument("--informative", type=int, default=230, help="units whose mean depends on the class")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=ProbeOptions.epochs)
    parser.add_argument("--grid-max-rows", type=int, default=ProbeOptions.grid_max_rows)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    x_train, y_train = synthetic(args.n, args.units, args.classes, args.informative, seed=0)
    x_dev, y_dev = synthetic(args.dev, args.units, args.classes, args.informative, seed=1)
    x_test, y_test = synthetic(args.dev, args.units, args.classes, args.informative, seed=2)
    options = ProbeOptions(
        threads=args.threads, epochs=args.epochs, grid_max_rows=args.grid_max_rows, device=args.device
    )
    start = time.perf_counter()
    selection = select_probe(x_train, y_train, x_dev, y_dev, args.classes, options)
    seconds = time.perf_counter() - start
    test_acc, _ = accuracy(y_test, selection.probe.predict(x_test), args.classes)
    weights = selection.probe.weights
    print(
        json.dumps(
            {
                "benchmark": "probe_train",
                "seconds_grid_plus_refit": round(seconds, 2),
                "n_train": args.n,
                "n_dev": args.dev,
                "units": args.units,
                "classes": args.classes,
                "threads": torch.get_num_threads(),
                "grid_points": len(selection.grid),
                "grid_rows": selection.grid_rows,
                "refit_epochs": selection.probe.epochs,
                "l1": selection.l1,
                "l2": selection.l2,
                "grid_dev_accuracy": {f"{p.l1:g},{p.l2:g}": round(p.dev_accuracy, 4) for p in selection.grid},
                "dev_accuracy": round(selection.dev_accuracy, 4),
                "test_accuracy": round(test_acc, 4),
                "majority_baseline": round(majority_baseline(y_train, y_test), 4),
                "zero_weight_fraction": round(float((weights == 0).mean()), 4),
                "informative_mass_share": round(
                    float(np.abs(weights[:, : args.informative]).sum() / max(np.abs(weights).sum(), 1e-30)), 4
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
