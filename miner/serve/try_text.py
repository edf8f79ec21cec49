"""Try your text: a user's sentences through the run's model, loaded once; the current unit's activation on
each token, and the units the text excites most (reverse lookup).

Scores are computed as mining computes them (`BlockMiner.scores`: mean, or max, over real tokens, every unit of
the run at once). Units are ranked by the text's mean score over its sentences as a z-score against the unit's
distribution over the mined corpus (unit_moments: (score - mean) / std), so a unit with a large scale does not
win by scale alone; units with (almost) no spread are left out (std <= MIN_STD).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from miner.errors import InputError
from miner.mining.batches import make_batches
from miner.mining.block_miner import BlockMiner
from miner.model.layout import unit_layout
from miner.report.activations import aggregate, cached_model, token_activations
from miner.report.records import SentenceEntry, UnitRef
from miner.run.catalog import read_run_table
from miner.serve.runs import ServedRun

MIN_STD = 1e-6
"""Units whose corpus scores spread less than this are left out of the ranking (a z-score of noise)."""


@dataclass(frozen=True)
class Limits:
    """Bounds of one "try your text" request and of the server's concurrency."""

    max_chars: int = 2000
    """Characters of text per request."""
    max_sentences: int = 16
    """Sentences (lines) per request."""
    concurrent: int = 2
    """Requests computed at once; more wait, then get 503."""
    top_units: int = 20
    """Units listed for the text as a whole."""


@dataclass
class UnitHit:
    unit_id: int
    label: str
    score: float
    """The text's mean sentence score for the unit."""
    z: float
    """(score - corpus mean) / corpus std."""


@dataclass
class TryResult:
    sentences: list[SentenceEntry]
    """Each sentence with the current unit's token activations (None without a unit)."""
    max_abs: float | None
    top: list[UnitHit]


def split_text(text: str, limits: Limits) -> list[str]:
    """The request's sentences: its non-blank lines; InputError past the limits.

    >>> split_text("a cat.\\n\\n  a dog. ", Limits())
    ['a cat.', 'a dog.']
    """
    if len(text) > limits.max_chars:
        raise InputError(f"text: {len(text):,} characters; at most {limits.max_chars:,} per request")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError("text: type at least one sentence")
    if len(lines) > limits.max_sentences:
        raise InputError(f"text: {len(lines)} sentences; at most {limits.max_sentences} per request (one per line)")
    return lines


class TextProbe:
    """The run's model, loaded on first use, and the units' corpus moments."""

    def __init__(self, run: ServedRun, device: str = "cpu", lock: threading.Lock | None = None) -> None:
        self.run = run
        self.device = device
        self._lock = lock or threading.Lock()
        """Held around every forward: the server shares one lock between unit pages and requests."""
        self._miner: BlockMiner | None = None
        moments = read_run_table(run.path, "unit_moments", columns=["unit_id", "mean", "std"]).sort_by("unit_id")
        self.mean = moments["mean"].to_numpy().astype(np.float64)
        self.std = moments["std"].to_numpy().astype(np.float64)

    def _model(self) -> BlockMiner:
        if self._miner is None:
            job, model = self.run.manifest.get("job", {}), self.run.manifest.get("model", {})
            loaded = cached_model(Path(model.get("path") or job.get("model")),
                                  model.get("init", job.get("init", "pretrained")),
                                  int(model.get("init_seed", job.get("init_seed", 0))), self.device)
            layout = unit_layout(loaded.config, list(job.get("sites", ["hidden"])), job.get("layers"))
            if layout.n_units != len(self.run.unit_ids):
                raise InputError(f"{self.run.path}: the model at {loaded.folder} gives {layout.n_units} units, the "
                                 f"run has {len(self.run.unit_ids)}")
            self._miner = BlockMiner(loaded, layout, top_n=1, max_length=int(job.get("max_length", 128)),
                                     batch_size=16, aggregation=job.get("aggregation", "mean"))
        return self._miner

    def run_text(self, sentences: list[str], unit: UnitRef | None, top: int) -> TryResult:
        """Scores of every unit for the sentences, the top units by z-score, and the unit's token activations."""
        with self._lock:  # one forward at a time through the shared model and its hooks
            miner = self._model()
            ids = np.arange(len(sentences), dtype=np.int64)
            batches, _ = make_batches(miner.loaded.tokenizer, ids, sentences, miner.max_length, miner.batch_size)
            scores = np.zeros((len(sentences), len(self.run.unit_ids)), np.float64)
            for batch in batches:
                tensors = miner.forward(batch)
                scores[batch.ids.numpy()] = miner.scores(tensors, batch.real).float().cpu().numpy()
            acts = (token_activations(miner.loaded, unit, ids.tolist(), sentences, miner.max_length)
                    if unit is not None else {})
        mean = scores.mean(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(self.std > MIN_STD, (mean - self.mean) / self.std, np.nan)
        finite = np.flatnonzero(np.isfinite(z))
        best = finite[np.lexsort((finite, -z[finite]))[:top]]
        hits = [UnitHit(int(u), self.run.label(int(u)), float(mean[u]), float(z[u])) for u in best]
        entries, peak = [], 0.0
        for i, text in enumerate(sentences):
            tokens, words = acts.get(i, (None, None))
            score = float(scores[i, unit.unit_id]) if unit is not None else float("nan")
            entries.append(SentenceEntry(rank=i + 1, sentence_id=i, score=score, text=text, peak_position=None,
                                         peak_token=None, peak_score=None, metadata={}, tokens=tokens, words=words,
                                         recomputed_score=aggregate(tokens, miner.aggregation) if tokens else None))
            peak = max([peak] + [abs(t.activation) for t in tokens or []])
        return TryResult(sentences=entries, max_abs=peak or None, top=hits)
