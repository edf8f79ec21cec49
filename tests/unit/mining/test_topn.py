"""Exact top-N queues: key packing, merging, ties, windowed hot path — each against a brute-force sort, with the
compiled row cut (`native.cut_rows`, tested against torch.topk in test_native_stats.py) and with torch.topk."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from miner.mining import native
from miner.mining.topn import (
    SENTINEL,
    Candidates,
    TopNQueues,
    WindowedQueues,
    decode_keys,
    encode_keys,
    pack_payload,
    unpack_payload,
)


@pytest.fixture(autouse=True, params=["compiled", "torch"])
def cut_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with the compiled row cut and with the torch.topk one (`MINER_NATIVE`)."""
    monkeypatch.setenv("MINER_NATIVE", "1" if request.param == "compiled" else "0")
    if request.param == "compiled" and not native.available():
        pytest.skip("no compiled kernel (no C compiler)")
    return str(request.param)


def brute_top(scores: np.ndarray, ids: np.ndarray, n: int) -> list[list[int]]:
    """Per unit (column), the ids of the n highest scores, ties by smaller id."""
    return [[int(ids[i]) for i in sorted(range(len(ids)), key=lambda i: (-scores[i, u], ids[i]))[:n]]
            for u in range(scores.shape[1])]


def test_keys_round_trip_and_order() -> None:
    scores = torch.tensor([0.5, 0.5, -1.0, -0.0, 0.0, 3e38, -3e38, 1e-30])
    ids = torch.tensor([7, 3, 1, 4, 2, 0, 9, 5])
    keys = encode_keys(scores, ids)
    s, i = decode_keys(keys)
    assert torch.equal(s, scores + 0.0) and torch.equal(i, ids)
    order = torch.argsort(keys, descending=True).tolist()
    expected = sorted(range(8), key=lambda k: (-float(scores[k]), int(ids[k])))
    assert order == expected  # -0.0 and 0.0 tie and fall back to the id


def test_payload_round_trip() -> None:
    vals = torch.tensor([1.5, -2.25, 0.0, float("inf")])
    pos = torch.tensor([0, 3, 4095, 70000])
    v, p = unpack_payload(pack_payload(vals, pos))
    assert torch.equal(v, vals) and torch.equal(p, pos)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_incremental_merge_equals_brute_force_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_sent, n_units, n = 400, 6, 25
    scores = rng.integers(-4, 4, size=(n_sent, n_units)).astype(np.float32) / 2  # many ties
    ids = rng.permutation(10_000)[:n_sent].astype(np.int64)
    q = TopNQueues(n_units, n)
    gained_total = 0
    for lo in range(0, n_sent, 37):
        k = encode_keys(torch.from_numpy(scores[lo:lo + 37].T), torch.from_numpy(ids[lo:lo + 37])[None, :])
        mask = k > q.threshold()[:, None]
        u, c = mask.nonzero(as_tuple=True)
        gained_total += int(q.merge(Candidates(u, k[u, c], pack_payload(torch.zeros(len(u)), c))).sum())
    units, ranks, keys, _ = q.sorted_entries()
    _, got_ids = decode_keys(keys)
    expected = brute_top(scores, ids, n)
    for unit in range(n_units):
        assert got_ids[units == unit].tolist() == expected[unit]
        assert ranks[units == unit].tolist() == list(range(1, n + 1))
    assert gained_total >= n * n_units


def brute_gains(scores: np.ndarray, ids: np.ndarray, n: int, cuts: list[int]) -> list[list[int]]:
    """Per merge (sentences up to each cut), per unit: entries of the brute-force top-n new since the last cut."""
    out, before = [], [set() for _ in range(scores.shape[1])]
    for cut in cuts:
        now = [set(t) for t in brute_top(scores[:cut], ids[:cut], n)]
        out.append([len(now[u] - before[u]) for u in range(scores.shape[1])])
        before = now
    return out


@pytest.mark.parametrize("spare", [None, 3, 0])
def test_merge_gains_and_growth_equal_brute_force(spare: int | None) -> None:
    """Merges of all keys (no threshold: many more than the spare columns per row) grow the buffers; the
    queues and the per-merge gains equal a brute-force recount."""
    rng = np.random.default_rng(9)
    n_sent, n_units, n = 300, 5, 12
    scores = rng.integers(-5, 5, size=(n_sent, n_units)).astype(np.float32)
    ids = rng.permutation(5000)[:n_sent].astype(np.int64)
    q = TopNQueues(n_units, n, spare=spare)
    cuts = [7, 40, 41, 120, 300]
    want = brute_gains(scores, ids, n, cuts)
    lo = 0
    for cut, gains in zip(cuts, want):
        k = encode_keys(torch.from_numpy(scores[lo:cut].T), torch.from_numpy(ids[lo:cut])[None, :])
        units = torch.arange(n_units).repeat_interleave(cut - lo)
        perm = torch.from_numpy(rng.permutation(units.numel()))  # any order: merge sorts by unit
        assert q.merge(Candidates(units[perm], k.flatten()[perm], k.flatten()[perm] ^ 5)).tolist() == gains
        assert int(q.count.max()) <= n and bool((q.keys[q.count[:, None] <= torch.arange(n)] == SENTINEL).all())
        lo = cut
    units, _, keys, payload = q.sorted_entries()
    assert torch.equal(payload, keys ^ 5)
    _, got = decode_keys(keys)
    expected = brute_top(scores, ids, n)
    for unit in range(n_units):
        assert got[units == unit].tolist() == expected[unit]


def test_dense_candidate_rows_merge_like_flat_ones() -> None:
    """Dense candidate rows (SENTINEL = empty slot: ragged rows) merge as a slab when the queue's rows are
    level and through the flat form otherwise; queues and gains equal the flat merge and brute force."""
    rng = np.random.default_rng(4)
    n_sent, n_units, n = 240, 4, 10
    scores = rng.integers(-4, 4, size=(n_sent, n_units)).astype(np.float32)
    ids = rng.permutation(7000)[:n_sent].astype(np.int64)
    dense, flat = TopNQueues(n_units, n), TopNQueues(n_units, n, spare=2)
    offered: list[list[tuple[float, int]]] = [[] for _ in range(n_units)]
    before: list[set[int]] = [set() for _ in range(n_units)]
    lo = 0
    for k, cut in enumerate([8, 30, 90, 91, 240]):
        keys = encode_keys(torch.from_numpy(scores[lo:cut].T), torch.from_numpy(ids[lo:cut])[None, :])
        keys[k % n_units, :: 2] = SENTINEL  # a ragged row: half its slots empty
        rows = Candidates(None, keys, keys ^ 9)
        u, c = (keys != SENTINEL).nonzero(as_tuple=True)
        got_dense = dense.merge(Candidates.from_numpy(rows.to_numpy()))
        got_flat = flat.merge(Candidates(u, keys[u, c], keys[u, c] ^ 9))
        assert torch.equal(got_dense, got_flat)
        assert len(rows) == u.numel() and torch.equal(rows.sparse().keys, keys[u, c])
        gains = []  # brute-force recount over what was offered (the emptied slots never were)
        for unit in range(n_units):
            offered[unit] += [(float(scores[lo + j, unit]), int(ids[lo + j])) for j in range(cut - lo)
                              if int(keys[unit, j]) != SENTINEL]
            now = {i for _, i in sorted(offered[unit], key=lambda t: (-t[0], t[1]))[:n]}
            gains.append(len(now - before[unit]))
            before[unit] = now
        assert got_dense.tolist() == gains
        lo = cut
    for q in (dense, flat):
        units, _, keys, payload = q.sorted_entries()
        assert torch.equal(payload, keys ^ 9)
    assert all(torch.equal(a, b) for a, b in zip(dense.sorted_entries(), flat.sorted_entries()))
    # a queue whose rows are not level takes the flat path
    flat.count[0] -= 1
    flat._keys[0, int(flat.count[0])] = SENTINEL
    extra = encode_keys(torch.full((n_units, 3), 9.0), torch.arange(3)[None, :])
    assert flat.merge(Candidates(None, extra, extra)).tolist() == [3] * n_units


def run_windowed(wq: WindowedQueues, scores: torch.Tensor, ids: torch.Tensor, batch: int) -> None:
    for lo in range(0, scores.shape[0], batch):
        k = encode_keys(scores[lo:lo + batch].T, ids[lo:lo + batch][None, :])
        mask = k > wq.thresh[:, None]
        u, c = mask.nonzero(as_tuple=True)
        wq.add(u, k[u, c], pack_payload(scores[lo + c, u], (lo + c) % 7))


def test_windowed_queue_equals_plain_queue_and_keeps_payload() -> None:
    rng = np.random.default_rng(5)
    n_sent, n_units, n = 300, 4, 10
    scores = torch.from_numpy(rng.normal(size=(n_sent, n_units)).astype(np.float32))
    ids = torch.arange(1000, 1000 + n_sent)
    wq = WindowedQueues(n_units, n, window=16)
    for _ in range(2):  # the second block reuses the buffers after a reset
        wq.reset()
        run_windowed(wq, scores, ids, 16)
        entries = wq.finish().sparse()
        assert bool((torch.bincount(entries.units, minlength=n_units) == n).all())
        units, _, keys, payload = wq.sorted_entries()
        s, got = decode_keys(keys)
        peak, pos = unpack_payload(payload)
        assert torch.equal(peak, s)  # payload travelled with its key
        assert torch.equal(pos, (got - 1000) % 7)
        expected = brute_top(scores.numpy(), ids.numpy(), n)
        for unit in range(n_units):
            assert got[units == unit].tolist() == expected[unit]
    assert wq.thresh.tolist() == wq.threshold().tolist()  # full rows: the threshold is the N-th best
    kept = wq.finish()  # a block's result must survive the next block in the reused buffers
    snapshot = (kept.keys.clone(), kept.payload.clone())
    wq.reset()
    run_windowed(wq, -scores, ids + 5000, 16)
    wq.finish()
    assert torch.equal(kept.keys, snapshot[0]) and torch.equal(kept.payload, snapshot[1])


def test_dense_slabs_and_sparse_adds_mix() -> None:
    """Batches added densely (SENTINEL where no candidate) and sparsely, in any mix, equal brute force."""
    rng = np.random.default_rng(8)
    n_sent, n_units, n, b = 400, 5, 12, 16
    scores = torch.from_numpy(rng.integers(-6, 6, size=(n_sent, n_units)).astype(np.float32))
    ids = torch.from_numpy(rng.permutation(9000)[:n_sent].astype(np.int64))
    wq = WindowedQueues(n_units, n, window=b)
    for k, lo in enumerate(range(0, n_sent, b)):
        keys = encode_keys(scores[lo:lo + b].T, ids[lo:lo + b][None, :])
        payload = keys ^ 3
        if k % 3 == 0:
            wq.add_slab(keys.masked_fill(keys <= wq.thresh[:, None], SENTINEL), payload)
        else:
            u, c = (keys > wq.thresh[:, None]).nonzero(as_tuple=True)
            wq.add(u, keys[u, c], payload[u, c])
    entries = wq.finish().sparse()
    assert bool((entries.keys != SENTINEL).all()) and torch.equal(entries.payload, entries.keys ^ 3)
    units, _, keys, _ = wq.sorted_entries()
    _, got = decode_keys(keys)
    expected = brute_top(scores.numpy(), ids.numpy(), n)
    for unit in range(n_units):
        assert got[units == unit].tolist() == expected[unit]


def test_floor_excludes_what_cannot_enter_and_fewer_than_n() -> None:
    floor = encode_keys(torch.tensor([0.0]), torch.tensor([0]))
    wq = WindowedQueues(1, 5, window=8, floor=floor)
    run_windowed(wq, torch.tensor([[-1.0], [2.0], [0.0], [1.0]]), torch.tensor([1, 2, 3, 4]), 4)
    _, got = decode_keys(wq.finish().sparse().keys)
    assert sorted(got.tolist()) == [2, 4]  # 0.0 from id 3 ties the floor's score but has a larger id
    assert int((wq.keys == SENTINEL).sum()) == 3
    wq.reset()
    assert len(wq.finish()) == 0 and int(wq.thresh[0]) == SENTINEL
    sparse = WindowedQueues(4, 5, window=8)  # one row of four gets candidates: handed back flat
    k = encode_keys(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([7, 8, 9]))
    sparse.add(torch.zeros(3, dtype=torch.int64), k, k)
    out = sparse.finish()
    assert not out.dense and out.units.tolist() == [0, 0, 0] and sorted(out.keys.tolist()) == sorted(k.tolist())


def test_checkpoint_state_round_trip() -> None:
    q = TopNQueues(3, 4)
    k = encode_keys(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1, 2, 3]))
    q.merge(Candidates(torch.tensor([0, 1, 2]), k, torch.tensor([5, 6, 7])))
    r = TopNQueues.from_state(q.state())
    assert torch.equal(r.keys, q.keys)  # and the payloads of the entries (those of empty slots are unspecified):
    assert all(np.array_equal(r.state()[f], q.state()[f]) for f in ("keys", "payload"))
    assert bool((q.state()["payload"][q.state()["keys"] == SENTINEL] == 0).all())  # a checkpoint's are 0
    # a checkpoint whose empty slots sit between entries (any layout is valid) is compacted on load
    state = {"keys": np.array([[SENTINEL, 9, SENTINEL, 4]]), "payload": np.array([[0, 90, 0, 40]])}
    r = TopNQueues.from_state(state)
    assert r.keys.tolist() == [[9, 4, SENTINEL, SENTINEL]] and r.payload.tolist()[0][:2] == [90, 40]
    assert r.count.tolist() == [2]
    r.merge(Candidates(torch.tensor([0, 0, 0]), torch.tensor([1, 7, 12]), torch.tensor([10, 70, 120])))
    assert sorted(r.keys.tolist()[0]) == [4, 7, 9, 12]

