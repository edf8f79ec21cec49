"""The compiled kernels (miner.mining.native) against their torch twins: scores (masked mean / max) and peaks
(first position of the max and the min over real tokens) of every cell, ties and odd widths included; the cut of
queue rows to their N best against torch.topk."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from miner.mining import native
from miner.mining.batches import make_batches
from miner.mining.block_miner import BlockMiner
from miner.mining.topn import SENTINEL, encode_keys, pack_payload
from miner.model.layout import unit_layout
from miner.model.loading import load_model
from tests.support.builders import SENTENCES, tiny_model
from tests.unit.mining.test_activations_peaks import brute_peaks, random_case


def test_builds_where_a_compiler_exists() -> None:
    """The kernel is what CPU mining runs wherever a C compiler is installed (as on CI): a build that broke
    would otherwise go unnoticed behind the torch fallback."""
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler on this machine: mining uses the torch operations")
    assert native.available()


def torch_twin(tensors: list[torch.Tensor], real: torch.Tensor, mean: bool) -> tuple[torch.Tensor, torch.Tensor,
                                                                                      torch.Tensor]:
    x = torch.cat(tensors, dim=2)
    m = real[:, :, None]
    hi = x.masked_fill(~m, float("-inf")).max(1)
    lo = x.masked_fill(~m, float("inf")).min(1)
    scores = (x * m).sum(1) / m.sum(1) if mean else hi.values
    return scores, pack_payload(hi.values, hi.indices), pack_payload(lo.values, lo.indices)


@pytest.mark.skipif(not native.available(), reason="no compiled kernel (no C compiler)")
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mean", [True, False])
def test_equals_torch_with_ties_and_odd_widths(seed: int, mean: bool) -> None:
    """Integer-valued activations (ties everywhere: the first real position wins), widths that are not
    multiples of the 8-wide vectors, special tokens and padding, a row of special tokens only."""
    tensors, offsets, real = random_case(seed, [13, 8, 21, 3], b=7, t=12)
    tensors[1][2, 3, 4] = -0.0  # -0.0 ties 0.0
    tensors[1][2, 4, 4] = 0.0
    got = native.token_stats(tensors, offsets, 45, real, mean, True)
    scores, top, bottom = torch_twin(tensors, real, mean)
    assert got.finite
    assert torch.allclose(got.scores, scores, rtol=1e-6, atol=1e-6)
    assert torch.equal(got.top, top) and torch.equal(got.bottom, bottom)
    assert torch.equal(got.top, brute_peaks(tensors, real, True))
    if not mean:
        assert torch.equal(got.scores, scores)


@pytest.mark.skipif(not native.available(), reason="no compiled kernel (no C compiler)")
def test_scattered_real_tokens_long_rows_and_threads() -> None:
    """Real tokens that are not one run, rows of 300 tokens, random floats; any row split over threads gives
    the same bits."""
    g = torch.Generator().manual_seed(5)
    tensors = [torch.randn(5, 300, w, generator=g) for w in (40, 17)]
    real = torch.rand((5, 300), generator=g) < 0.3
    real[:, 7] = True
    runs = [native.token_stats(tensors, [0, 40], 57, real, True, True, threads=k) for k in (1, 2, 3, 5)]
    scores, top, bottom = torch_twin(tensors, real, True)
    assert torch.allclose(runs[0].scores, scores, rtol=1e-5, atol=1e-6)
    assert torch.equal(runs[0].top, top) and torch.equal(runs[0].bottom, bottom)
    for r in runs[1:]:
        assert torch.equal(r.scores, runs[0].scores) and torch.equal(r.top, runs[0].top)
        assert torch.equal(r.bottom, runs[0].bottom)
    one = native.token_stats(tensors, [0, 40], 57, real, True, False)
    assert one.bottom is None and torch.equal(one.top, top)


@pytest.mark.skipif(not native.available(), reason="no compiled kernel (no C compiler)")
@pytest.mark.parametrize("mean", [True, False])
def test_bfloat16_activations_give_their_float32_copys_bits(mean: bool) -> None:
    """A bf16 forward's activations go to the kernel as they are: widening bf16 is exact, so the scores and
    peaks are bit for bit those of the float32 copy (and equal the torch twin on it); tails of odd widths and
    scattered real tokens included, on 1 and 3 threads."""
    g = torch.Generator().manual_seed(11)
    tensors = [torch.randn(6, 40, w, generator=g).to(torch.bfloat16) for w in (24, 13, 5)]
    tensors[0][1, 3, 2] = tensors[0][1, 9, 2] = 4.0  # a tie: the first real position wins
    real = torch.rand((6, 40), generator=g) < 0.4
    real[:, 1] = True
    assert native.takes(tensors) and not native.takes([tensors[0], tensors[1].float()])
    wide = [x.float() for x in tensors]
    want = native.token_stats(wide, [0, 24, 37], 42, real, mean, True)
    for threads in (1, 3):
        got = native.token_stats(tensors, [0, 24, 37], 42, real, mean, True, threads=threads)
        assert got.finite and torch.equal(got.scores, want.scores)
        assert torch.equal(got.top, want.top) and torch.equal(got.bottom, want.bottom)
    scores, top, bottom = torch_twin(wide, real, mean)
    assert torch.allclose(want.scores, scores, rtol=1e-5, atol=1e-6)
    assert torch.equal(want.top, top) and torch.equal(want.bottom, bottom)


@pytest.mark.skipif(not native.available(), reason="no compiled kernel (no C compiler)")
def test_non_finite_activations_are_reported() -> None:
    """NaN or infinite activations, or a row without real tokens, make `finite` False (mining then takes the
    per-candidate torch peaks for that batch)."""
    tensors, offsets, real = random_case(4, [9, 16], b=4, t=8)
    assert native.token_stats(tensors, offsets, 25, real, True, True).finite
    for bad in (float("nan"), float("inf"), float("-inf")):
        for layer, unit in ((0, 8), (1, 11)):  # the tail unit of a 9-wide layer, one in the 8-wide vectors
            xs = [x.clone() for x in tensors]
            xs[layer][1, int(real[1].nonzero()[-1]), unit] = bad
            for mean in (True, False):  # with max scores too (a NaN never wins a comparison)
                assert not native.token_stats(xs, offsets, 25, real, mean, True).finite
    empty = real.clone()
    empty[2] = False
    out = native.token_stats(tensors, offsets, 25, empty, True, True)
    assert not out.finite and bool(out.scores[2].isnan().all()) and bool((out.top[2] == 0).all())


@pytest.mark.skipif(not native.available(), reason="no compiled kernel (no C compiler)")
@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_model_batches_scores_and_peaks(tmp_path: Path, arch: str) -> None:
    """Real forward passes (hidden and mlp sites): the miner's scores come from the kernel and agree with the
    torch scores; the kernel's peaks are the dense torch peaks."""
    loaded = load_model(tiny_model(tmp_path / arch, arch))
    layout = unit_layout(loaded.config, ["hidden", "mlp"], None)
    miner = BlockMiner(loaded, layout, 3, batch_size=4)
    assert miner.use_native
    texts = SENTENCES + [s.upper() for s in SENTENCES]
    batches, _ = make_batches(loaded.tokenizer, np.arange(len(texts)), texts, miner.max_length, 4)
    for batch in batches:
        tensors = miner.forward(batch)
        got = native.token_stats(tensors, miner.offsets, layout.n_units, batch.real, True, True)
        assert torch.equal(miner.scores(tensors, batch.real), got.scores)
        assert torch.allclose(got.scores, miner.torch_scores(tensors, batch.real), rtol=1e-5, atol=1e-6)
        assert torch.equal(got.top, brute_peaks(tensors, batch.real, True))
        assert torch.equal(got.bottom, brute_peaks(tensors, batch.real, False))
    miner.close()


@pytest.mark.parametrize("use_native", [True, False])
def test_nan_activation_takes_torch_semantics(tmp_path: Path, use_native: bool) -> None:
    """A NaN activation makes its batch fall back to the torch operations on either path: the sentence's mean
    is NaN, its key sorts above every number (it enters the top queue) and its peak is torch.max's (the NaN
    at its position)."""
    from miner.mining.topn import Candidates, decode_keys, unpack_payload

    loaded = load_model(tiny_model(tmp_path / "bert", "bert"))
    layout = unit_layout(loaded.config, ["hidden"], None)
    miner = BlockMiner(loaded, layout, 2, batch_size=4, use_native=use_native)
    forward, calls, where = miner.forward, [0], {}

    def poisoned(batch):  # the second batch: a NaN at the last real token of its first sentence, unit 5
        tensors = forward(batch)
        calls[0] += 1
        if calls[0] == 2:
            pos = int(batch.real[0].nonzero()[-1])
            tensors[0][0, pos, 5] = float("nan")
            where.update(sentence=int(batch.ids[0]), pos=pos)
        return tensors

    miner.forward = poisoned
    texts = SENTENCES + [s.upper() for s in SENTENCES]
    top = Candidates.from_numpy(miner.mine_block(0, np.arange(len(texts)), texts, None).directions["top"]).sparse()
    mask = top.units == 5
    scores, ids = decode_keys(top.keys[mask])
    i = ids.tolist().index(where["sentence"])
    assert torch.isnan(scores[i])
    value, pos = unpack_payload(top.payload[mask][i : i + 1])
    assert torch.isnan(value[0]) and int(pos[0]) == where["pos"]
    miner.close()


def torch_cut(keys: torch.Tensor, payload: torch.Tensor, count: torch.Tensor, n: int, width: int,
              before: torch.Tensor) -> tuple[list[set[tuple[int, int]]], list[int], list[int]]:
    """The torch.topk cut of every row with count > n: per row its kept (key, payload) pairs, fresh, low."""
    kept, fresh, low = [], [], []
    for r in range(keys.shape[0]):
        if int(count[r]) <= n:
            kept.append({(int(k), int(p)) for k, p in zip(keys[r], payload[r]) if int(k) != SENTINEL})
            fresh.append(-1)
            low.append(0)
            continue
        top = torch.topk(keys[r, :width], n)
        kept.append({(int(k), int(payload[r, i])) for k, i in zip(top.values, top.indices) if int(k) != SENTINEL})
        fresh.append(int(((top.indices >= before[r]) & (top.values != SENTINEL)).sum()))
        low.append(int(top.values.min()))
    return kept, fresh, low


@pytest.mark.skipif(not native.available(), reason="no compiled kernel (no C compiler)")
@pytest.mark.parametrize(("seed", "rows", "stride", "n"), [(0, 37, 90, 11), (1, 37, 90, 11), (2, 37, 90, 11),
                                                         (3, 9, 1500, 600), (4, 9, 1500, 20), (5, 9, 1500, 1400)])
def test_compiled_cut_equals_torch_topk(seed: int, rows: int, stride: int, n: int) -> None:
    """Rows of distinct keys with holes, some under n filled, some under n slots counted, ties in the scores
    (broken by the ids in the keys): the same entries, fresh counts and row minima as torch.topk, for any
    number of threads; the kept entries first in each row, SENTINEL after them. Long rows (1,500 slots) take
    the sampled bracket of the selection, its n near either end of the row included."""
    rng = np.random.default_rng(seed)
    width = int(rng.integers(n + 1, stride + 1))
    scores = torch.from_numpy(rng.integers(-3, 3, size=(rows, stride)).astype(np.float32))
    keys = encode_keys(scores, torch.from_numpy(rng.permutation(rows * stride).reshape(rows, stride)))
    keys[:, width:] = SENTINEL
    holes = torch.from_numpy(rng.random((rows, stride)) < rng.choice([0.0, 0.3, 0.95], size=(rows, 1)))
    keys[holes] = SENTINEL
    payload = torch.from_numpy(rng.integers(0, 1 << 40, size=(rows, stride)))
    count = torch.from_numpy(rng.integers(0, width + 1, size=rows))
    for r in range(rows):  # a row's slots from count on are empty
        keys[r, int(count[r]):] = SENTINEL
    before = torch.from_numpy(rng.integers(0, width + 1, size=rows))
    want_kept, want_fresh, want_low = torch_cut(keys, payload, count, n, width, before)
    results = []
    for threads in (1, 2, 3):
        k, p, c = keys.clone(), payload.clone(), count.clone()
        cut, fresh, low = native.cut_rows(k, p, c, n, width, before, threads=threads)
        assert cut == sum(f >= 0 for f in want_fresh) and fresh.tolist() == want_fresh
        for r in range(rows):
            if want_fresh[r] < 0:  # not cut: untouched
                assert torch.equal(k[r], keys[r]) and torch.equal(p[r], payload[r]) and int(c[r]) == int(count[r])
                continue
            filled = int((k[r] != SENTINEL).sum())
            assert bool((k[r, :filled] != SENTINEL).all()) and bool((k[r, filled:] == SENTINEL).all())
            assert {(int(a), int(b)) for a, b in zip(k[r, :filled], p[r, :filled])} == want_kept[r]
            assert int(c[r]) == n and int(low[r]) == want_low[r]
        results.append((k, p[k != SENTINEL], c))
    assert all(torch.equal(a[0], results[0][0]) and torch.equal(a[1], results[0][1]) for a in results)


@pytest.mark.skipif(not native.available(), reason="no compiled kernel (no C compiler)")
def test_compiled_cut_of_equal_keys_keeps_the_first_and_an_adversarial_row() -> None:
    keys = torch.tensor([[5, 9, 7, 7, 7, 1]])
    payload = torch.arange(6)[None, :] * 10
    _, fresh, low = native.cut_rows(keys, payload, torch.tensor([6]), 3, 6, torch.tensor([3]))
    assert keys.tolist() == [[9, 7, 7, SENTINEL, SENTINEL, SENTINEL]] and payload[0, :3].tolist() == [10, 20, 30]
    assert fresh.tolist() == [1] and low.tolist() == [7]
    # sorted, reverse-sorted and organ-pipe rows (bad quickselect pivots) of 5,000 keys: the 100 best stay
    # and a row whose 64 sampled slots (every 5000 / 64-th) hold its 64 largest keys: the sample's bracket
    # misses the 100th best, and the plain selection takes over
    planted = torch.arange(5000)
    spots = torch.arange(64) * 5000 // 64
    rest = torch.ones(5000, dtype=torch.bool)
    rest[spots] = False
    planted[spots], planted[rest] = torch.arange(4936, 5000), torch.arange(4936)
    same = torch.full((1, 5000), 7)  # equal keys (never made by mining): n of them stay, the first ones
    native.cut_rows(same, same.clone(), torch.tensor([5000]), 100, 5000)
    assert same[0, :100].tolist() == [7] * 100 and bool((same[0, 100:] == SENTINEL).all())
    for row in (torch.arange(5000), torch.arange(5000).flip(0),
                torch.cat([torch.arange(0, 5000, 2), torch.arange(4999, 0, -2)]), planted):
        k, p = row[None, :].clone(), row[None, :].clone()
        native.cut_rows(k, p, torch.tensor([5000]), 100, 5000)
        assert sorted(k[0, :100].tolist()) == list(range(4900, 5000)) and torch.equal(k[:, :100], p[:, :100])


@pytest.mark.skipif(not native.available(), reason="no compiled kernel (no C compiler)")
@pytest.mark.parametrize("bottom", [True, False])
def test_compiled_window_add_equals_brute_force_and_the_torch_window(bottom: bool) -> None:
    """Batches of tied scores (-0.0 and 0.0 alike) into a floored window of 37 units (not a multiple of the
    16-unit strips), rows cut on the spot as they fill: the block's entries equal a brute-force top-N above the
    floor and the torch window's (candidate_slab / sparse_candidates + add, flush), payloads with them, and the
    thresholds agree after the block, for any number of threads."""
    from miner.mining.peaks import candidate_slab, candidate_superset, sparse_candidates
    from miner.mining.topn import WindowedQueues, decode_keys

    rng = np.random.default_rng(3)
    n_sent, b, u, n, window = 200, 16, 37, 9, 16
    d = 2 if bottom else 1
    scores = torch.from_numpy(rng.integers(-3, 4, size=(n_sent, u)).astype(np.float32) / 2)
    scores[:40:3] = -0.0
    ids = torch.from_numpy(rng.permutation(5000)[:n_sent].astype(np.int64))
    top = torch.from_numpy(rng.integers(0, 1 << 40, size=(n_sent, u)))
    low = torch.from_numpy(rng.integers(0, 1 << 40, size=(n_sent, u)))
    floor = encode_keys(torch.from_numpy(rng.integers(-4, 1, size=d * u).astype(np.float32) / 2),
                        torch.from_numpy(rng.integers(0, 5000, size=d * u)))
    floor[::5] = SENTINEL

    def entries(q: WindowedQueues) -> list[set[tuple[int, int]]]:
        got = q.finish().sparse()
        rows: list[set[tuple[int, int]]] = [set() for _ in range(d * u)]
        for r, k, p in zip(got.units.tolist(), got.keys.tolist(), got.payload.tolist()):
            rows[r].add((k, p))
        return rows

    signed_all = torch.cat([scores.T, -scores.T]) if bottom else scores.T
    peaks_all = torch.cat([top.T, low.T]) if bottom else top.T
    keys_all = encode_keys(signed_all, ids[None, :])
    want = []
    for r in range(d * u):
        above = [(int(k), int(p)) for k, p in zip(keys_all[r], peaks_all[r]) if int(k) > int(floor[r])]
        want.append(set(sorted(above, reverse=True)[:n]))
    torch_q = WindowedQueues(d * u, n, window, floor)
    for lo in range(0, n_sent, b):
        sc = scores[lo : lo + b]
        signed, superset = candidate_superset(sc, torch_q.thresh_scores, True)
        pk = peaks_all[:, lo : lo + b]
        if lo % (3 * b) == 0:
            torch_q.add_slab(candidate_slab(signed, ids[lo : lo + b], torch_q.thresh), pk)
        else:
            rows, cols, keys = sparse_candidates(signed, superset, ids[lo : lo + b], torch_q.thresh)
            torch_q.add(rows, keys, pk[rows, cols])
    assert entries(torch_q) == want
    before = torch.get_num_threads()
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)  # the kernel runs on torch's thread count
        q = WindowedQueues(d * u, n, window, floor)
        for lo in range(0, n_sent, b):
            q.add_scored(scores[lo : lo + b].contiguous(), ids[lo : lo + b].contiguous(), top[lo : lo + b].contiguous(),
                         low[lo : lo + b].contiguous() if bottom else None)
        got_thresh = q.thresh.clone()
        assert entries(q) == want
        assert torch.equal(q.thresh, torch.maximum(floor, q.keys.min(dim=1).values))  # finish: the N-th best
        assert bool((got_thresh <= q.thresh).all()) and bool((got_thresh >= floor).all())
        assert torch.equal(q.thresh_scores, torch.where(q.thresh == SENTINEL, float("-inf"), decode_keys(q.thresh)[0]))
    torch.set_num_threads(before)


@pytest.mark.skipif(not native.available(), reason="no compiled kernel (no C compiler)")
def test_compiled_batch_sums_equal_the_torch_sums() -> None:
    """A block's moment sums and histogram from the compiled pass (int32 counters) and from the torch operations
    (int64): the same counts, minima, maxima and positive counts, exactly, and the same float64 sums to
    1e-12 relative, NaN, infinities and -0.0 included, over batches of 37 units (not a multiple of 16)."""
    from miner.mining.block_sums import BatchSums

    rng = np.random.default_rng(11)
    compiled = BatchSums(37, torch.device("cpu"), use_native=True)
    plain = BatchSums(37, torch.device("cpu"), use_native=False)
    assert compiled.hist.dtype == torch.int32 and plain.hist.dtype == torch.int64
    held = BatchSums(37, torch.device("cpu"), use_native=True)
    held.pending_bytes = 1  # each batch summed as it comes: the same sums
    for k in range(5):
        x = (rng.normal(size=(9 + k, 37)) * 10.0 ** rng.integers(-3, 4, size=(1, 37))).astype(np.float32)
        x[0, :3] = [-0.0, 0.0, np.inf]
        if k == 3:
            x[2, 5], x[4, 6] = np.nan, -np.inf
        t = torch.from_numpy(x)
        compiled.add(t)
        plain.add(t)
        held.add(t)
    assert compiled.pending_bytes > 5 * 13 * 37 * 4  # all five batches were held, then summed in one pass
    got, want = compiled.result(), plain.result()
    assert got.count == want.count
    for name in ("low", "high", "positive", "hist"):  # exactly (NaN where NaN)
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    for name in ("total", "squares"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-12, atol=0.0, err_msg=name)
    one_by_one = held.result()
    for name in ("total", "squares", "low", "high", "positive", "hist"):  # bit for bit: the same order of sums
        assert np.array_equal(getattr(got, name), getattr(one_by_one, name), equal_nan=True), name


@pytest.mark.skipif(not native.available(), reason="no compiled kernel (no C compiler)")
def test_compiled_merge_rows_keeps_the_best_and_counts_the_gain() -> None:
    """The docstring's row, a row under n after the merge, a row without candidates; bad offsets are refused.
    (Every queue test in test_topn.py runs through it against brute force too.)"""
    keys = torch.tensor([[9, 4, SENTINEL], [3, SENTINEL, SENTINEL], [8, 6, SENTINEL]])
    payload = keys * 10
    count = torch.tensor([2, 1, 2])
    cand = torch.tensor([7, SENTINEL, 1, 5])
    starts = torch.tensor([0, 3, 4, 4])
    gained = native.merge_rows(keys, payload, count, 2, cand, cand * 10, starts)
    assert keys.tolist() == [[9, 7, SENTINEL], [3, 5, SENTINEL], [8, 6, SENTINEL]]
    assert torch.equal(payload[keys != SENTINEL], keys[keys != SENTINEL] * 10)
    assert count.tolist() == [2, 2, 2] and gained.tolist() == [1, 1, 0]
    with pytest.raises(ValueError, match="starts"):
        native.merge_rows(keys, payload, count, 2, cand, cand, torch.tensor([0, 3, 2, 4]))


@pytest.mark.skipif(not native.available(), reason="no compiled kernel (no C compiler)")
@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_merge_rows_of_long_rows_equal_torch_topk(seed: int) -> None:
    """Queue rows of up to 600 entries with holes merged with up to 900 candidates each (SENTINEL among them,
    tied scores): the entries a torch.topk over both keeps, and the candidates among them."""
    rng = np.random.default_rng(seed)
    rows, n = 9, 600
    scores = torch.from_numpy(rng.integers(-40, 40, size=(rows, n + 900)).astype(np.float32) / 8)
    both = encode_keys(scores, torch.from_numpy(rng.permutation(rows * (n + 900)).reshape(rows, n + 900)))
    both[torch.from_numpy(rng.random(both.shape) < 0.2)] = SENTINEL
    count = torch.from_numpy(rng.integers(0, n + 1, size=rows))
    keys = both[:, :n].clone()
    for r in range(rows):
        keys[r, int(count[r]):] = SENTINEL
    took = torch.from_numpy(rng.integers(0, 901, size=rows))
    cand = [both[r, n : n + int(took[r])] for r in range(rows)]
    want = []
    for r in range(rows):
        pool = torch.cat([keys[r], cand[r]])
        pool = pool[pool != SENTINEL]
        best = torch.topk(pool, min(n, pool.numel())).values
        want.append((set(best.tolist()), len(set(best.tolist()) & set(cand[r].tolist()))))
    payload = keys ^ 77
    flat = torch.cat(cand)
    starts = torch.zeros(rows + 1, dtype=torch.int64)
    starts[1:] = torch.cumsum(took, 0)
    gained = native.merge_rows(keys, payload, count, n, flat, flat ^ 77, starts)
    for r in range(rows):
        c = int(count[r])
        assert set(keys[r, :c].tolist()) == want[r][0] and int(gained[r]) == want[r][1]
        assert bool((keys[r, c:] == SENTINEL).all()) and torch.equal(payload[r, :c], keys[r, :c] ^ 77)
