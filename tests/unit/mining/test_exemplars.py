"""Exemplars across the activation range equal a per-unit loop over the sample; bands are validated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from miner.errors import ConfigError
from miner.hashing import hash_uniform
from miner.mining import exemplars
from miner.mining.exemplars import band_names, exemplar_table


def loop_exemplars(ids: np.ndarray, scores: np.ndarray, edges: list[float], k: int, seed: int) -> list[tuple]:
    """Rows (unit, band, rank, sentence_id, score) one unit and band at a time."""
    r, n_units = scores.shape
    names = [*band_names(edges), "random"]
    cuts = [int(np.floor(q * r)) for q in (0.0, *edges)] + [r]
    out = []
    for u in range(n_units):
        s = scores[:, u].astype(np.float32)
        order = sorted(range(r), key=lambda i: (s[i], ids[i]))
        for band, (lo, hi) in enumerate([*zip(cuts, cuts[1:]), (0, r)]):
            h = hash_uniform(seed, "exemplar" if band < len(names) - 1 else "exemplar-random", ids, np.full(r, u))
            rows = sorted(order[lo:hi], key=lambda i: h[i])[:k]
            for rank, i in enumerate(sorted(rows, key=lambda i: (-s[i], ids[i])), start=1):
                out.append((u, names[band], rank, int(ids[i]), float(s[i])))
    return sorted(out, key=lambda t: (t[0], names.index(t[1]), t[2]))


@pytest.mark.parametrize("chunk", [512, 3])  # units ranked all at once, and a few at a time
def test_exemplars_equal_a_per_unit_loop(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exemplars, "UNIT_CHUNK", chunk)
    rng = np.random.default_rng(0)
    ids = np.sort(rng.choice(10_000, size=400, replace=False)).astype(np.int64)
    scores = rng.normal(size=(400, 7)).astype(np.float16)
    scores[:40, 2] = 0.0  # ties, broken by sentence id
    edges = [0.5, 0.9, 0.99]
    t = exemplar_table(ids, scores, edges, 3, seed=4).to_pandas()
    got = list(zip(t.unit_id, t.band, t["rank"], t.sentence_id, t.score.astype(float)))
    assert got == loop_exemplars(ids, scores, edges, 3, 4)
    # every exemplar lies in its band's sample quantiles; the top band holds the unit's best sentences
    assert (t[t.band == "99-100%"]["quantile"] >= 0.99).all() and (t[t.band == "0-50%"]["quantile"] < 0.5).all()
    assert len(t) == 7 * (3 + 3 + 3 + 3 + 3)


def test_bands_must_increase_inside_zero_one(tmp_path: Path) -> None:
    from miner.config import load_job
    from tests.support.builders import write_job

    for bands, word in (([0.9, 0.5], "increasing"), ([0.0, 0.5], "between 0 and 1"), ([0.5, 1.0], "between")):
        path = write_job(tmp_path / "j.yaml", name="j", model="m", corpus="c", output="o",
                         sample={"exemplar_bands": bands})
        with pytest.raises(ConfigError, match=word) as exc:
            load_job(path)
        assert "exemplar_bands" in str(exc.value)
