"""Peak tokens computed per candidate equal the dense reduction (their brute-force twin), ties included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from miner.mining.batches import make_batches
from miner.mining.block_miner import BlockMiner
from miner.mining.peaks import (
    RealTokens,
    candidate_peaks,
    candidate_superset,
    dense_peaks,
    real_span,
    sparse_candidates,
)
from miner.mining.topn import SENTINEL, encode_keys, pack_payload, threshold_scores, unpack_payload
from miner.model.layout import unit_layout
from miner.model.loading import load_model
from tests.support.builders import SENTENCES, tiny_model


def brute_peaks(tensors: list[torch.Tensor], real: torch.Tensor, largest: bool) -> torch.Tensor:
    """int64 [B, U] packed peaks by loops: the first real position holding the row's max (min)."""
    x = torch.cat([t.to(torch.float32) for t in tensors], dim=2)
    b, t, u = x.shape
    out = torch.empty((b, u), dtype=torch.int64)
    for i in range(b):
        pos = [p for p in range(t) if real[i, p]]
        for j in range(u):
            vals = [float(x[i, p, j]) for p in pos]
            best = max(vals) if largest else min(vals)
            k = pos[vals.index(best)]
            out[i, j] = pack_payload(x[i, k, j][None], torch.tensor([k]))[0]
    return out


def random_case(seed: int, widths: list[int], b: int = 9, t: int = 11, dtype: torch.dtype = torch.float32,
                ) -> tuple[list[torch.Tensor], list[int], torch.Tensor]:
    """Integer-valued activations (many ties) and real masks shaped like tokenised batches: a special first
    token, a contiguous run of real tokens, a special last token, padding; one row of special tokens only.
    """
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randint(-3, 4, (b, t, w), generator=g).to(dtype) for w in widths]
    offsets = list(np.cumsum([0, *widths[:-1]]))
    real = torch.zeros((b, t), dtype=torch.bool)
    for i in range(b):
        n = int(torch.randint(3, t + 1, (1,), generator=g))
        real[i, 1 : n - 1] = True
    real[0, :2] = True  # "[CLS] [SEP]" only: scored over everything attended, so position 0 is real here
    real[0, 2:] = False
    return tensors, offsets, real


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("largest", [True, False])
def test_dense_and_candidate_peaks_equal_brute_force(seed: int, largest: bool) -> None:
    tensors, offsets, real = random_case(seed, [5, 3, 4])
    n_units = 12
    want = brute_peaks(tensors, real, largest)
    tokens = RealTokens.of(real)
    assert torch.equal(dense_peaks(tensors, offsets, n_units, tokens, largest), want)
    g = torch.Generator().manual_seed(100 + seed)
    for density in (0.0, 0.1, 0.5, 1.0):
        mask = torch.rand((n_units, real.shape[0]), generator=g) < density
        units, cols = mask.nonzero(as_tuple=True)
        got = candidate_peaks(tensors, offsets, tokens, units, cols, largest)
        assert torch.equal(got, want[cols, units]), density


def test_candidate_peaks_bf16_and_signed_zero() -> None:
    tensors, offsets, real = random_case(7, [6, 2], dtype=torch.bfloat16)
    tensors[0][:, :, 0] = -0.0
    tensors[0][1, 3, 0] = 0.0  # +0.0 after -0.0 ties: the first position (and its -0.0 bits) wins
    units, cols = torch.ones((8, real.shape[0]), dtype=torch.bool).nonzero(as_tuple=True)
    for largest in (True, False):
        want = brute_peaks(tensors, real, largest)
        tokens = RealTokens.of(real)
        assert torch.equal(candidate_peaks(tensors, offsets, tokens, units, cols, largest), want[cols, units])
        assert torch.equal(dense_peaks(tensors, offsets, 8, tokens, largest), want)


def test_docstring_example() -> None:
    x = torch.tensor([9.0, 4.0, 7.0, 7.0, 1.0]).reshape(1, 5, 1)
    real = torch.tensor([[False, True, True, True, False]])
    tokens = RealTokens.of(real)
    for got in (candidate_peaks([x], [0], tokens, torch.tensor([0]), torch.tensor([0]), True),
                dense_peaks([torch.tensor([8.0, 2.0, 7.0, 7.0, 9.0]).reshape(1, 5, 1)], [0], 1, tokens, True)):
        val, pos = unpack_payload(got)
        assert float(val[0]) == 7.0 and int(pos[0]) == 2
    two = RealTokens.of(torch.tensor([[0, 1, 1, 1, 0], [0, 1, 1, 0, 0]], dtype=torch.bool))
    assert (two.lo, two.width, two.holes[0].tolist(), two.holes[1].tolist()) == (1, 3, [0, 0, 1, 1, 1], [0, 4, 0, 3, 4])
    assert real_span(torch.tensor([[0, 1, 1, 0, 0], [0, 1, 1, 1, 0]], dtype=torch.bool)) == (1, 4)


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_model_batches_sparse_equals_dense(tmp_path: Path, arch: str) -> None:
    """Real forward passes (hidden and mlp sites): every path of BlockMiner.peaks gives the dense payloads."""
    loaded = load_model(tiny_model(tmp_path / arch, arch))
    layout = unit_layout(loaded.config, ["hidden", "mlp"], None)
    miner = BlockMiner(loaded, layout, 3, batch_size=4)
    texts = SENTENCES + [s.upper() for s in SENTENCES]
    batches, _ = make_batches(loaded.tokenizer, np.arange(len(texts)), texts, miner.max_length, 4)
    g = torch.Generator().manual_seed(0)
    for batch in batches:
        tensors = miner.forward(batch)
        for largest in (True, False):
            dense = miner.extremes(tensors, batch.real, largest)
            assert torch.equal(dense, brute_peaks(tensors, batch.real, largest))
            for density in (0.05, 0.3, 0.9):
                mask = torch.rand((layout.n_units, batch.real.shape[0]), generator=g) < density
                units, cols = mask.nonzero(as_tuple=True)
                for fraction in (0.0, 0.5, 2.0):  # always dense, by density, never dense
                    miner.dense_peak_fraction = fraction
                    got = miner.peaks(tensors, RealTokens.of(batch.real), units, cols, largest)
                    assert torch.equal(got, dense[cols, units])
    miner.close()


def test_long_spans_and_scattered_real_tokens() -> None:
    """Spans of 256+ tokens, and a row whose real tokens are not one run (holes everywhere in the span)."""
    tensors, offsets, real = random_case(11, [3, 2], b=4, t=300)
    real[2] = False
    real[2, 5:290:7] = True  # not one run
    tokens = RealTokens.of(real)
    units, cols = torch.ones((5, 4), dtype=torch.bool).nonzero(as_tuple=True)
    for largest in (True, False):
        want = brute_peaks(tensors, real, largest)
        assert torch.equal(dense_peaks(tensors, offsets, 5, tokens, largest), want)
        assert torch.equal(candidate_peaks(tensors, offsets, tokens, units, cols, largest), want[cols, units])


def legacy_peaks(tensors: list[torch.Tensor], offsets: list[int], n_units: int, real: torch.Tensor,
                 largest: bool) -> torch.Tensor:
    """The previous dense path (torch.max(dim) with indices over the core columns, edges masked)."""
    b, t = real.shape
    any_real, all_real = real.any(0), real.all(0)
    core = all_real.nonzero().squeeze(1)
    lo, hi = (int(core[0]), int(core[-1]) + 1) if core.numel() else (0, 0)
    if core.numel() and not bool(all_real[lo:hi].all()):
        lo, hi = 0, 0
    edge_pos = (any_real & ~(torch.arange(t).ge(lo) & torch.arange(t).lt(hi))).nonzero().squeeze(1)
    fill = float("-inf") if largest else float("inf")
    out = torch.empty((b, n_units), dtype=torch.int64)
    for x, off in zip(tensors, offsets):
        vals = idx = None
        if hi > lo:
            red = x[:, lo:hi].max(1) if largest else x[:, lo:hi].min(1)
            vals, idx = red.values.to(torch.float32), red.indices + lo
        if edge_pos.numel():
            ex = x[:, edge_pos].to(torch.float32).masked_fill(~real[:, edge_pos, None], fill)
            red = ex.max(1) if largest else ex.min(1)
            ev, ei = red.values, edge_pos[red.indices]
            if vals is None:
                vals, idx = ev, ei
            else:
                better = ev > vals if largest else ev < vals
                vals, idx = torch.where(better, ev, vals), torch.where(better, ei, idx)
        out[:, off : off + x.shape[2]] = pack_payload(vals, idx)
    return out


def test_same_payloads_as_the_previous_dense_path(tmp_path: Path) -> None:
    """On real batches (every row has real tokens at the same start) the payloads are bit-identical to the
    torch.max(dim) path they replace."""
    loaded = load_model(tiny_model(tmp_path / "m", "bert"))
    layout = unit_layout(loaded.config, ["hidden", "mlp"], None)
    miner = BlockMiner(loaded, layout, 3, batch_size=5)
    texts = SENTENCES + [s.lower() for s in SENTENCES]
    batches, _ = make_batches(loaded.tokenizer, np.arange(len(texts)), texts, miner.max_length, 5)
    for batch in batches:
        tensors = miner.forward(batch)
        for largest in (True, False):
            old = legacy_peaks(tensors, miner.offsets, layout.n_units, batch.real, largest)
            assert torch.equal(miner.extremes(tensors, batch.real, largest), old)
    miner.close()


def test_candidates_equal_the_key_comparison() -> None:
    """The float pre-filter keeps exactly the cells whose keys beat the threshold: ties on the threshold's
    score (decided by sentence id), -0.0 against 0.0, NaN scores, thresholds holding a NaN score of either
    sign (a negated NaN sorts below every number), empty (SENTINEL) rows and queues; the one-comparison
    path for batches known to be finite too."""
    g = torch.Generator().manual_seed(3)
    with_nan = torch.randint(-2, 3, (40, 6), generator=g).to(torch.float32) / 2
    finite = with_nan.clone()
    with_nan[3, 0], with_nan[4, 0], with_nan[5, 1] = -0.0, 0.0, float("nan")
    with_nan[6, 2] = -float("nan")
    finite[3, 0], finite[4, 0] = -0.0, 0.0
    ids = torch.randperm(1000, generator=g)[:40]
    for trial in range(20):
        thresh = encode_keys(torch.randint(-2, 3, (12,), generator=g).to(torch.float32) / 2,
                             torch.randint(0, 1000, (12,), generator=g))
        thresh[trial % 12] = SENTINEL
        if trial == 0:
            thresh[:] = SENTINEL  # empty queues: every cell is a candidate
        if trial % 3 == 1:  # NaN thresholds: positive ones admit no number, negated ones every number
            nan = torch.tensor([float("nan"), -float("nan")])
            thresh[(trial + 1) % 12], thresh[(trial + 7) % 12] = encode_keys(nan, torch.tensor([5, 6]))
        for scores, known_finite in ((with_nan, False), (finite, False), (finite, True)):
            for directions in (1, 2):
                t = thresh[: 6 * directions]
                superset = candidate_superset(scores, threshold_scores(t), known_finite)
                rows, cols, keys = sparse_candidates(*superset, ids, t)
                signed = scores.T if directions == 1 else torch.cat([scores.T, -scores.T])
                all_keys = encode_keys(signed, ids[None, :])
                want_rows, want_cols = (all_keys > t[:, None]).nonzero(as_tuple=True)
                assert torch.equal(rows, want_rows) and torch.equal(cols, want_cols)
                assert torch.equal(keys, all_keys[rows, cols])
