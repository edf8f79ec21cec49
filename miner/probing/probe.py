"""ElasticNet multinomial logistic-regression probe (Dalvi et al. 2019, NeuroX): train, select lambdas, score."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from miner.errors import ConfigError
from miner.probing.rankings import check_labelled

log = logging.getLogger(__name__)

# Default lambda grid: "none" plus three decades up to NeuroX's default of 1e-3 for each penalty. With a mean
# cross-entropy over standardised features, l1 = 1e-3 already zeroes most weights of a 768-4096 unit layer, so
# larger values only prune harder; below 1e-5 the penalties no longer change the dev accuracy measurably.
DEFAULT_L1_GRID = (0.0, 1e-5, 1e-4, 1e-3)
DEFAULT_L2_GRID = (0.0, 1e-5, 1e-4, 1e-3)

_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8
_EVAL_CHUNK = 8192


@dataclass(frozen=True)
class ProbeOptions:
    """How a probe is trained and how its lambdas are chosen; validated on construction."""

    epochs: int = 20
    """Most passes over the training rows (early stopping on dev may end sooner)."""
    batch_size: int = 512
    """Rows per minibatch."""
    lr: float = 1e-2
    """Adam's initial learning rate; it decays linearly to 0 over `epochs` (early stopping may end sooner)."""
    seed: int = 0
    """Seeds the row shuffling and the grid subsample; same seed, same probe (on CPU)."""
    device: str = "cpu"
    """Torch device: "cpu", "cuda" or "cuda:N"; float32 throughout."""
    l1_grid: tuple[float, ...] = DEFAULT_L1_GRID
    """L1 strengths tried by select_probe."""
    l2_grid: tuple[float, ...] = DEFAULT_L2_GRID
    """L2 strengths tried by select_probe (every pair with l1_grid)."""
    grid_max_rows: int | None = 20_000
    """select_probe chooses lambdas on a seeded subsample of at most this many train rows (None: all rows)."""
    patience: int = 3
    """Epochs without a dev-accuracy gain before training stops (only when dev rows are given)."""
    threads: int | None = None
    """torch.set_num_threads(threads) before training, when given."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"probe.{name}: must be >= 1")
        if not self.lr > 0:
            raise ConfigError("probe.lr: must be > 0")
        for name in ("l1_grid", "l2_grid"):
            values = getattr(self, name)
            if len(values) == 0:
                raise ConfigError(f"probe.{name}: must not be empty")
            if any(not v >= 0 for v in values):
                raise ConfigError(f"probe.{name}: must be >= 0")
        if self.grid_max_rows is not None and self.grid_max_rows < 1:
            raise ConfigError("probe.grid_max_rows: must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("probe.threads: must be >= 1")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"probe.device: {self.device!r} is not cpu or cuda")


@dataclass(frozen=True)
class Standardizer:
    """Per-unit affine map fit on the train split: z = (x - mean) / scale; a constant unit gets scale 1."""

    mean: np.ndarray
    """float64 [U] train mean of each unit."""
    scale: np.ndarray
    """float64 [U] train standard deviation of each unit (1 where it is 0)."""

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        """Fit on rows of x [n, U].

        >>> s = Standardizer.fit(np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float32))
        >>> s.mean.tolist(), s.scale.tolist()
        ([2.0, 5.0], [1.0, 1.0])
        >>> s.transform(np.array([[3.0, 6.0]], dtype=np.float32)).tolist()
        [[1.0, 1.0]]
        """
        mean = x.mean(axis=0, dtype=np.float64)
        scale = x.std(axis=0, dtype=np.float64)
        scale[scale == 0] = 1.0
        return cls(mean=mean, scale=scale)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """float32 [n, U] standardised copy of x."""
        return ((x - self.mean.astype(np.float32)) / self.scale.astype(np.float32)).astype(np.float32, copy=False)


@dataclass(frozen=True)
class TrainedProbe:
    """A fitted probe; weights live in the standardised space of its standardizer."""

    weights: np.ndarray
    """float32 [C, U] class-by-unit weights (standardised inputs); exact zeros where L1 pruned a weight."""
    bias: np.ndarray
    """float32 [C] per-class bias (not penalised)."""
    l1: float
    """L1 strength it was trained with."""
    l2: float
    """L2 strength it was trained with."""
    epochs: int
    """Epochs actually run."""
    standardizer: Standardizer
    """The map fit on its train rows, applied to every input."""

    def decision(self, x: np.ndarray) -> np.ndarray:
        """float32 [n, C] logits for raw (unstandardised) rows x [n, U]."""
        return self.standardizer.transform(x) @ self.weights.T + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        """int64 [n] predicted labels for raw rows x [n, U]."""
        return self.decision(x).argmax(axis=1).astype(np.int64)


@dataclass(frozen=True)
class GridPoint:
    """One (l1, l2) setting tried by select_probe."""

    l1: float
    l2: float
    dev_accuracy: float
    """Best dev accuracy reached over the epochs (trained on the grid subsample)."""
    best_epoch: int
    """Epoch (1-based) at which that accuracy was first reached."""


@dataclass(frozen=True)
class ProbeSelection:
    """The chosen lambdas, every grid point's dev accuracy, and the probe refit on the full train split."""

    probe: TrainedProbe
    l1: float
    l2: float
    grid: list[GridPoint] = field(default_factory=list)
    """Every setting tried, in grid order (l1 outer, l2 inner)."""
    grid_rows: int = 0
    """Train rows the grid was fit on (the seeded subsample)."""
    dev_accuracy: float = float("nan")
    """Dev accuracy of the refit probe."""


def probe_device(preference: str) -> str:
    """Where probes train: "cuda" when the job allows it and a GPU is visible, else "cpu"."""
    return "cuda" if preference != "cpu" and torch.cuda.is_available() else "cpu"


def _check_lambda(name: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(f"probe.{name}: must be >= 0")


def _check_inputs(x: np.ndarray, y: np.ndarray, n_classes: int) -> None:
    check_labelled(x, y, n_classes, "probe")


def _set_threads(options: ProbeOptions) -> None:
    if options.threads is not None:
        torch.set_num_threads(options.threads)


class _MatMul:
    """Matrix products on all of torch's threads while elementwise work runs on one.

    On CPU, torch's two-thread elementwise kernels cost ~10 ms per 1.6M floats on our 2-core machines (thread
    wake-ups) against ~0.2 ms on one thread, and the optimiser step is all elementwise; so the fit runs with one
    thread and raises it to `threads` only around each matmul. On CUDA it is a plain matmul.
    """

    def __init__(self, threads: int | None) -> None:
        self.threads = threads

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.threads is None:
            return a @ b
        torch.set_num_threads(self.threads)
        try:
            return a @ b
        finally:
            torch.set_num_threads(1)


def _fit_stacked(
    xs: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    l1s: Sequence[float],
    l2s: Sequence[float],
    options: ProbeOptions,
    dev: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, int]:
    """Fit G probes at once (one matmul against their stacked weights) with Adam plus a proximal L1 step.

    xs is standardised [n, U] on the device. Returns (weights [G, C, U], bias [G, C], best dev accuracy [G],
    best epoch [G], epochs run); with dev rows the weights are each setting's best-dev epoch, otherwise the last.
    """
    if xs.device.type != "cpu":
        return _fit_loop(xs, y, n_classes, l1s, l2s, options, dev, _MatMul(None))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_loop(xs, y, n_classes, l1s, l2s, options, dev, _MatMul(threads))
    finally:
        torch.set_num_threads(threads)


def _fit_loop(
    xs: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    l1s: Sequence[float],
    l2s: Sequence[float],
    options: ProbeOptions,
    dev: tuple[torch.Tensor, torch.Tensor] | None,
    mm: _MatMul,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, int]:
    """The epochs of _fit_stacked."""
    n, n_units = xs.shape
    g, c = len(l1s), n_classes
    dev_t = xs.device
    gen = torch.Generator(device="cpu").manual_seed(options.seed)
    w = torch.zeros(n_units, g * c, dtype=torch.float32, device=dev_t)
    b = torch.zeros(g * c, dtype=torch.float32, device=dev_t)
    l1_col = torch.tensor(l1s, dtype=torch.float32, device=dev_t).repeat_interleave(c)
    l2_col = torch.tensor(l2s, dtype=torch.float32, device=dev_t).repeat_interleave(c)
    m_w, v_w = torch.zeros_like(w), torch.zeros_like(w)
    m_b, v_b = torch.zeros_like(b), torch.zeros_like(b)
    beta1, beta2 = _ADAM_BETAS
    steps_total = options.epochs * -(-n // options.batch_size)
    best_acc = np.full(g, -1.0)
    best_epoch = np.zeros(g, dtype=np.int64)
    best_w, best_b = w.clone(), b.clone()
    step, epochs_run, stale = 0, 0, 0
    for epoch in range(1, options.epochs + 1):
        perm = torch.randperm(n, generator=gen).to(dev_t)
        for start in range(0, n, options.batch_size):
            idx = perm[start : start + options.batch_size]
            xb, yb = xs.index_select(0, idx), y.index_select(0, idx)
            logits = (mm(xb, w) + b).view(-1, g, c)
            resid = torch.softmax(logits, dim=2)
            resid[torch.arange(len(idx), device=dev_t), :, yb] -= 1.0
            resid = resid.view(-1, g * c) / len(idx)
            grad_w = mm(xb.T, resid).add_(w * l2_col, alpha=2.0)
            grad_b = resid.sum(dim=0)
            lr = options.lr * (1.0 - step / steps_total)  # linear decay to 0 over the epoch budget
            step += 1
            corr1, corr2 = 1.0 - beta1**step, (1.0 - beta2**step) ** 0.5
            for param, grad, m, v in ((w, grad_w, m_w, v_w), (b, grad_b, m_b, v_b)):
                m.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denom = v.sqrt().div_(corr2).add_(_ADAM_EPS)
                param.addcdiv_(m, denom, value=-lr / corr1)
                if param is w:  # proximal soft-threshold in Adam's metric: threshold lr * l1 / denom
                    shrink = (w.abs() - lr * l1_col / denom).clamp_(min=0.0)
                    w.copy_(torch.sign(w) * shrink)
        epochs_run = epoch
        if dev is None:
            continue
        acc = _stacked_accuracy(dev[0], dev[1], w, b, g, c, mm)
        improved = acc > best_acc
        if improved.any():
            cols = torch.from_numpy(np.repeat(improved, c)).to(dev_t)
            best_w[:, cols] = w[:, cols]
            best_b[cols] = b[cols]
            best_acc[improved] = acc[improved]
            best_epoch[improved] = epoch
            stale = 0
        else:
            stale += 1
            if stale >= options.patience:
                break
    if dev is None:
        best_w, best_b = w, b
        best_epoch[:] = epochs_run
    weights = best_w.T.reshape(g, c, n_units)
    return weights, best_b.view(g, c), best_acc, best_epoch, epochs_run


def _stacked_accuracy(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, g: int, c: int, mm: _MatMul
) -> np.ndarray:
    """Accuracy [G] of each of G stacked probes on standardised rows x."""
    correct = torch.zeros(g, dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], _EVAL_CHUNK):
        logits = (mm(x[start : start + _EVAL_CHUNK], w) + b).view(-1, g, c)
        correct += (logits.argmax(dim=2) == y[start : start + _EVAL_CHUNK, None]).sum(dim=0)
    return (correct / max(x.shape[0], 1)).cpu().numpy()


def _to_device(x: np.ndarray, y: np.ndarray, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    return xt, torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)).to(device)


def train_probe(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    l1: float,
    l2: float,
    options: ProbeOptions | None = None,
    x_dev: np.ndarray | None = None,
    y_dev: np.ndarray | None = None,
) -> TrainedProbe:
    """Fit one probe minimising mean cross-entropy + l1 * ||W||_1 + l2 * ||W||_2^2 (bias not penalised).

    With dev rows, stops after options.patience epochs without a dev gain and keeps the best-dev weights.

    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 200)
    >>> x = rng.normal(size=(200, 3)).astype(np.float32)
    >>> x[:, 0] += 3 * y
    >>> probe = train_probe(x, y, 2, l1=0.0, l2=0.0, options=ProbeOptions(epochs=30, batch_size=32))
    >>> float((probe.predict(x) == y).mean()) > 0.9, probe.weights.shape
    (True, (2, 3))
    >>> bool(probe.weights[1, 0] > probe.weights[0, 0])
    True
    """
    options = options or ProbeOptions()
    _check_lambda("l1", l1)
    _check_lambda("l2", l2)
    _check_inputs(x, y, n_classes)
    _set_threads(options)
    std = Standardizer.fit(x)
    xs, yt = _to_device(std.transform(x), y, options.device)
    dev = None
    if x_dev is not None and y_dev is not None:
        dev = _to_device(std.transform(x_dev), y_dev, options.device)
    w, b, _, best_epoch, epochs_run = _fit_stacked(xs, yt, n_classes, [l1], [l2], options, dev)
    return TrainedProbe(
        weights=w[0].cpu().numpy(),
        bias=b[0].cpu().numpy(),
        l1=float(l1),
        l2=float(l2),
        epochs=epochs_run,
        standardizer=std,
    )


def select_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_dev: np.ndarray,
    y_dev: np.ndarray,
    n_classes: int,
    options: ProbeOptions | None = None,
) -> ProbeSelection:
    """Try every (l1, l2) of the grid, keep the best dev accuracy, refit it on the full train split.

    All settings train together on one seeded subsample of at most options.grid_max_rows train rows (their
    weight matrices stacked into one). Ties in dev accuracy go to the larger l1 + l2, then the larger l1. The
    refit runs on every train row with early stopping on dev. Lambdas are per mean loss, so the ones chosen on a
    subsample regularise the full-data refit slightly more than an optimum found on all rows would.

    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 300)
    >>> x = rng.normal(size=(300, 20)).astype(np.float32)
    >>> x[np.arange(300), y] += 2.0
    >>> opts = ProbeOptions(epochs=10, batch_size=64, l1_grid=(0.0, 1.0), l2_grid=(0.0,))
    >>> sel = select_probe(x[:200], y[:200], x[200:], y[200:], 3, opts)
    >>> [(p.l1, p.l2) for p in sel.grid], sel.l1
    ([(0.0, 0.0), (1.0, 0.0)], 0.0)
    >>> sel.dev_accuracy > 0.7
    True
    """
    options = options or ProbeOptions()
    _check_inputs(x_train, y_train, n_classes)
    _check_inputs(x_dev, y_dev, n_classes)
    _set_threads(options)
    settings = [(float(a), float(b)) for a in options.l1_grid for b in options.l2_grid]
    rows = np.arange(x_train.shape[0])
    if options.grid_max_rows is not None and x_train.shape[0] > options.grid_max_rows:
        rng = np.random.default_rng(options.seed)
        rows = np.sort(rng.choice(x_train.shape[0], size=options.grid_max_rows, replace=False))
    x_sub, y_sub = x_train[rows], y_train[rows]
    std = Standardizer.fit(x_sub)
    xs, yt = _to_device(std.transform(x_sub), y_sub, options.device)
    dev = _to_device(std.transform(x_dev), y_dev, options.device)
    l1s, l2s = [s[0] for s in settings], [s[1] for s in settings]
    _, _, accs, epochs, _ = _fit_stacked(xs, yt, n_classes, l1s, l2s, options, dev)
    del xs, yt, dev
    grid = [GridPoint(a, b, float(acc), int(e)) for (a, b), acc, e in zip(settings, accs, epochs)]
    best = max(grid, key=lambda p: (p.dev_accuracy, p.l1 + p.l2, p.l1))
    log.info("probe grid on %d rows: best l1=%g l2=%g dev=%.4f", len(rows), best.l1, best.l2, best.dev_accuracy)
    probe = train_probe(x_train, y_train, n_classes, best.l1, best.l2, options, x_dev, y_dev)
    dev_acc, _ = accuracy(y_dev, probe.predict(x_dev), n_classes)
    return ProbeSelection(probe=probe, l1=best.l1, l2=best.l2, grid=grid, grid_rows=len(rows), dev_accuracy=dev_acc)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> tuple[float, np.ndarray]:
    """(overall accuracy, per-class accuracy [C]) with nan for classes absent from y_true.

    >>> overall, per_class = accuracy(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 3)
    >>> overall, per_class.tolist()
    (0.75, [0.5, 1.0, nan])
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        return float("nan"), np.full(n_classes, np.nan)
    hit = y_true == y_pred
    totals = np.bincount(y_true, minlength=n_classes).astype(np.float64)
    hits = np.bincount(y_true, weights=hit.astype(np.float64), minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(totals > 0, hits / np.maximum(totals, 1), np.nan)
    return float(hit.mean()), per_class


def majority_baseline(y_train: np.ndarray, y_test: np.ndarray) -> float:
    """Test accuracy of always predicting the most frequent train label (ties: the smallest label).

    >>> majority_baseline(np.array([2, 2, 1, 0]), np.array([2, 1, 2, 2]))
    0.75
    """
    majority = int(np.bincount(y_train).argmax())
    return float((np.asarray(y_test) == majority).mean())
