"""Exemplars across each unit's activation range, picked from the score sample (OpenAI's neuron viewer shows
sentences from quantile bands, not only the top).

The sample's R sentences are ranked per unit by score (ties: smaller sentence_id first); band [a, b) holds the
sentences at ranks floor(a R) .. floor(b R) - 1 from the lowest (the last band, [b_last, 1], runs to the top).
In each band, and among all R sentences for the "random" band (with a hash of its own), the k sentences with the
smallest seeded hash of (sentence_id, unit) are the exemplars, listed by score, highest first. The sample is the same for any number of
workers and after a resume, and so are the exemplars. Scores are the sample's (float16).

>>> ids = np.arange(100, 110)
>>> scores = np.arange(10, dtype=np.float16)[:, None]  # one unit, scores 0..9
>>> t = exemplar_table(ids, scores, [0.5], 2, seed=0).to_pandas()
>>> sorted(t.band.unique()), bool((t[t.band == "50-100%"].score >= 5).all()), len(t)
(['0-50%', '50-100%', 'random'], True, 6)
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from miner.hashing import hash_uniform

UNIT_CHUNK = 512
"""Units ranked at once (R x UNIT_CHUNK float32 scores and their ranks in memory)."""


def band_names(edges: list[float]) -> list[str]:
    """Band labels: [0.5, 0.9] -> ['0-50%', '50-90%', '90-100%'].

    >>> band_names([0.5, 0.99, 0.999])
    ['0-50%', '50-99%', '99-99.9%', '99.9-100%']
    """
    cuts = [0.0, *edges, 1.0]
    return [f"{_pct(a)}-{_pct(b)}%" for a, b in zip(cuts, cuts[1:])]


def _pct(q: float) -> str:
    return f"{q * 100:.10g}"


def exemplar_table(ids: np.ndarray, scores: np.ndarray, edges: list[float], k: int, seed: int) -> pa.Table:
    """The `unit_exemplars` table from the sample (ids ascending [R], scores [R, U]): per unit, band and rank
    (1 = highest score in the band) the sentence_id, its score and its quantile in the sample (rank / R)."""
    ids = np.asarray(ids, np.int64)
    if len(ids) > 1 and not bool((np.diff(ids) > 0).all()):
        raise ValueError("ids: must be ascending (the sample's rows are in sentence_id order)")
    r, n_units = scores.shape
    names = band_names(edges)
    cuts = [int(np.floor(q * r)) for q in (0.0, *edges)] + [r]
    cols: dict[str, list[np.ndarray]] = {c: [] for c in ("unit", "band", "rank", "row", "score", "quantile")}
    if r == 0 or k == 0:
        return _table(cols, names, ids)
    for u0 in range(0, n_units, UNIT_CHUNK):
        u1 = min(u0 + UNIT_CHUNK, n_units)
        s = np.asarray(scores[:, u0:u1], np.float32)
        order = np.argsort(s, axis=0, kind="stable")  # ascending score, ties by row: ids are ascending
        rank_of = np.empty_like(order)
        np.put_along_axis(rank_of, order, np.arange(r)[:, None], axis=0)
        units = np.arange(u0, u1, dtype=np.int64)
        keys = (np.repeat(ids, u1 - u0), np.tile(units, r))
        h_band = hash_uniform(seed, "exemplar", *keys).reshape(r, u1 - u0)
        for band, (lo, hi) in enumerate([*zip(cuts, cuts[1:]), (0, r)]):
            if hi <= lo:
                continue
            # the random band has a hash of its own: the bands' smallest hashes would also be its picks
            h = h_band if band < len(names) else hash_uniform(seed, "exemplar-random", *keys).reshape(r, u1 - u0)
            rows = order[lo:hi]  # [band rows, units]: the band's rows of each unit
            take = min(k, hi - lo)
            hb = np.take_along_axis(h, rows, axis=0)
            if take < hi - lo:  # the `take` smallest hashes (64-bit hashes do not tie), then in hash order
                part = np.argpartition(hb, take - 1, axis=0)[:take]
                part = np.take_along_axis(part, np.argsort(np.take_along_axis(hb, part, axis=0), axis=0), axis=0)
            else:
                part = np.argsort(hb, axis=0, kind="stable")
            pick = np.take_along_axis(rows, part, axis=0)  # [take, units]
            ps = np.take_along_axis(s, pick, axis=0)
            by_score = np.lexsort((np.take_along_axis(np.broadcast_to(ids[:, None], s.shape), pick, axis=0), -ps),
                                  axis=0)
            pick = np.take_along_axis(pick, by_score, axis=0)
            ps = np.take_along_axis(ps, by_score, axis=0)
            cols["unit"].append(np.broadcast_to(units, pick.shape).T.ravel())
            cols["band"].append(np.full(pick.size, band))
            cols["rank"].append(np.tile(np.arange(1, take + 1), u1 - u0))
            cols["row"].append(pick.T.ravel())
            cols["score"].append(ps.T.ravel())
            cols["quantile"].append(np.take_along_axis(rank_of, pick, axis=0).T.ravel() / r)
    return _table(cols, names, ids)


def _table(cols: dict[str, list[np.ndarray]], names: list[str], ids: np.ndarray) -> pa.Table:
    def cat(c: str, dtype: type) -> np.ndarray:
        return np.concatenate(cols[c]).astype(dtype) if cols[c] else np.zeros(0, dtype)

    unit, band, rank, row = cat("unit", np.int32), cat("band", np.int64), cat("rank", np.int32), cat("row", np.int64)
    order = np.lexsort((rank, band, unit))
    labels = np.array([*names, "random"], dtype=object)
    return pa.table({"unit_id": pa.array(unit[order]), "band": pa.array(labels[band[order]].tolist(), pa.string()),
                     "rank": pa.array(rank[order]), "sentence_id": pa.array(ids[row[order]] if len(row) else
                                                                            np.zeros(0, np.int64)),
                     "score": pa.array(cat("score", np.float32)[order]),
                     "quantile": pa.array(cat("quantile", np.float64)[order])})
