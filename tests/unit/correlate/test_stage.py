"""run_redundancy and `miner match` on tiny mined runs, against numpy / scipy brute force on the recorded sample."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.cluster.hierarchy import fcluster, linkage

from miner.cli.main import main
from miner.config import load_job
from miner.config.correlate import RedundancyOptions
from miner.correlate.redundancy import condensed_from_corr
from miner.correlate.stage import run_match, run_redundancy
from miner.errors import ConfigError
from miner.mining.driver import run_mining
from miner.run.catalog import catalog_path
from tests.support.builders import make_corpus, tiny_model, write_job


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny runs over one corpus: bert and gpt2 with the same sample, bert with another seed, bert without."""
    tmp = tmp_path_factory.mktemp("runs")
    corpus = make_corpus(tmp / "corpus", n=260, shard_size=100)
    models = {"bert": tiny_model(tmp / "bert", "bert"), "gpt2": tiny_model(tmp / "gpt2", "gpt2")}
    out = {}
    for name, model, sample in [("a", "bert", {"sentences": 150, "seed": 0}), ("b", "gpt2", {"sentences": 150}),
                                ("c", "bert", {"sentences": 60, "seed": 7}), ("none", "bert", {"sentences": 0})]:
        job = write_job(tmp / f"{name}.yaml", name=f"run-{name}", model=str(models[model]), corpus=str(corpus),
                        output=name, top_n=3, block_size=100, sample=sample)
        out[name] = Path(run_mining(*load_job(job), executor="inline")["run_dir"])
    return out


def sample_corr(run: Path) -> tuple[np.ndarray, np.ndarray]:
    x = np.load(run / "sample" / "scores.npy").astype(np.float64)
    ids = pq.read_table(run / "sample_sentences.parquet")["sentence_id"].to_numpy()
    return ids, x


def test_redundancy_equals_brute_force(runs: dict[str, Path]) -> None:
    run = runs["a"]
    summary = run_redundancy(run, RedundancyOptions(threshold=0.6, block=7))
    _, x = sample_corr(run)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.corrcoef(x.T)
    table = pq.read_table(run / "unit_redundancy.parquet").to_pandas()
    assert table.unit_id.tolist() == list(range(x.shape[1]))
    size = np.abs(np.nan_to_num(ref, nan=-1.0))
    np.fill_diagonal(size, -1)
    assert table.best_unit.tolist() == size.argmax(1).tolist()
    np.testing.assert_allclose(table.best_corr, ref[np.arange(len(ref)), size.argmax(1)], atol=2e-5)
    labels = fcluster(linkage(condensed_from_corr(ref), "average"), t=1 - 0.6, criterion="distance")
    same = labels[:, None] == labels[None, :]
    assert np.array_equal(same, table.cluster.to_numpy()[:, None] == table.cluster.to_numpy()[None, :])
    sizes = np.bincount(labels)[labels]
    assert table.redundant.tolist() == (sizes >= 2).tolist()
    layers = pq.read_table(run / "layer_redundancy.parquet").to_pandas()
    units = pq.read_table(run / "units.parquet").to_pandas().merge(table, on="unit_id")
    want = units.groupby(["site", "layer"]).redundant.mean()
    assert layers.set_index(["site", "layer"]).redundant_share.to_dict() == pytest.approx(want.to_dict())
    assert summary["redundant_units"] == int(table.redundant.sum()) and (layers.threshold == 0.6).all()
    with duckdb.connect(str(catalog_path(run)), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM unit_redundancy").fetchall() == [(x.shape[1],)]
    with pytest.raises(ConfigError, match=rf"redundancy.max_units: .* has {x.shape[1]} units") as info:
        run_redundancy(run, RedundancyOptions(max_units=10))
    assert "\n" not in str(info.value)


def test_match_with_itself_and_another_model(runs: dict[str, Path]) -> None:
    a, b = runs["a"], runs["b"]
    summary = run_match(a, [a, b])
    table = pq.read_table(a / "unit_matches.parquet").to_pandas()
    own = table[table.other_run == str(a.resolve())]
    assert (own.best_unit == own.unit_id).all() and np.allclose(own["corr"], 1.0, atol=1e-5)
    assert (own.shared_sentences == 150).all()
    other = table[table.other_name == "run-b"].sort_values("unit_id")
    ids_a, xa = sample_corr(a)
    ids_b, xb = sample_corr(b)
    assert ids_a.tolist() == ids_b.tolist()  # same corpus, same sample options: the same sentences
    ref = np.corrcoef(xa.T, xb.T)[: xa.shape[1], xa.shape[1]:]
    best = np.abs(ref).argmax(1)
    assert other.best_unit.tolist() == best.tolist()
    np.testing.assert_allclose(other["corr"], ref[np.arange(len(ref)), best], atol=2e-5)
    units_b = pq.read_table(b / "units.parquet").to_pandas().set_index("unit_id")
    assert other.best_layer.tolist() == units_b.layer.loc[best].tolist()
    assert other.best_idx.tolist() == units_b.idx.loc[best].tolist()
    assert [o["name"] for o in summary["others"]] == ["run-a", "run-b"]
    # the documented query: units of RUN without a counterpart (|r| < 0.5) in the other model
    query = ("SELECT m.unit_id, u.layer, m.corr FROM unit_matches m JOIN units u USING (unit_id) "
             "WHERE m.other_name = 'run-b' AND abs(m.corr) < 0.5 ORDER BY abs(m.corr)")
    with duckdb.connect(str(catalog_path(a)), read_only=True) as con:
        rows = con.sql(query).fetchall()
    assert len(rows) == int((np.abs(other["corr"]) < 0.5).sum())
    for layer in other.merge(pq.read_table(a / "units.parquet").to_pandas(), on="unit_id").groupby(["site", "layer"]):
        assert sorted(layer[1].layer_rank) == list(range(1, len(layer[1]) + 1))


def fails(argv: list[str], capsys: pytest.CaptureFixture[str], match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("miner: error:") and match in err[0], err


def test_bad_match_input_is_one_line_and_keeps_results(runs: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
    a = runs["a"]
    assert main(["match", str(a), str(runs["b"])]) == 0
    before = (a / "unit_matches.parquet").read_bytes()
    fails(["match", str(a), str(runs["none"])], capsys, f"{runs['none']}: has no score sample")
    fails(["match", str(runs["none"]), str(a)], capsys, f"{runs['none']}: has no score sample")
    fails(["match", str(a), str(runs["c"])], capsys, "shares")
    fails(["match", str(a), str(tmp_path)], capsys, "not a mining run")
    fails(["match", str(a), str(tmp_path / "nope")], capsys, "no such run folder")
    fails(["match", str(a), str(runs["b"]), "--min-shared", "1000"], capsys, "fewer than 1000")
    assert (a / "unit_matches.parquet").read_bytes() == before
