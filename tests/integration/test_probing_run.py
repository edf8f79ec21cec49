"""The probing stage on real runs: the same result inline, on 1 and 2 Ray workers, after a killed actor and after
a killed driver; the torch probe against scikit-learn on a real extraction; SQL joins with the mining tables;
and every bad probe section as one `miner: error:` line that leaves earlier results untouched."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from miner.cli import main
from miner.config import load_job, resolve_job_paths
from miner.mining.driver import run_mining
from miner.mining.processes import mining_actor_pids
from miner.probing.stage import run_probing
from miner.run.folder import FILES, PROBE_TABLES
from miner.signatures.stage import run_abstract
from tests.support.builders import make_corpus, tiny_model, write_job, write_jsonl

pytestmark = pytest.mark.integration
# The stored results that must not depend on the executor (probes.seconds is a timing).
SAME = ("probe_accuracy", "neuron_rankings", "probe_subsets", "probe_examples")
PROBE = {"concepts": [{"name": "pos", "kind": "tags"},
                      {"name": "sentiment", "kind": "metadata", "field": "sentiment"}],
         "max_per_class": 150, "min_per_class": 3, "rare_classes": "drop", "l1_grid": [0.0, 1e-3], "l2_grid": [0.0],
         "epochs": 8, "rankings": ["lca", "probeless", "ap"], "k_percent": [10, 50], "block_sentences": 16}


@pytest.fixture(scope="module")
def mined(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A mined and tagged run (tiny random BERT, hidden and mlp units) without probe tables, and its job fields."""
    base = tmp_path_factory.mktemp("probing")
    corpus = make_corpus(base / "corpus", n=240, shard_size=100)
    model = tiny_model(base / "model", "bert", hidden=32, layers=2)
    fields = {"name": "p", "model": str(model), "corpus": str(corpus), "output": str(base / "run"), "top_n": 5,
              "sites": ["hidden", "mlp"], "threads_per_worker": 1}
    run_mining(*load_job(write_job(base / "mine.yaml", **fields)), executor="inline")
    run_abstract(base / "run", executor="inline")
    return {"base": base, "fields": fields}


def probe_job(mined: dict, tmp: Path, name: str, **probe: object) -> tuple[Path, Path]:
    """A copy of the mined run and a job file probing it; returns (job file, run folder)."""
    run = tmp / name
    shutil.copytree(mined["base"] / "run", run)
    job = write_job(tmp / f"{name}.yaml", **{**mined["fields"], "output": str(run), "probe": {**PROBE, **probe}})
    return job, run


def probe(job_file: Path, executor: str = "inline", workers: int | None = None) -> dict:
    job, base = load_job(job_file)
    if workers is not None:
        job = job.model_copy(update={"workers": workers})
    job = resolve_job_paths(job, base, Path.cwd())
    assert job.output is not None
    return run_probing(job.output, job, executor=executor).to_dict()


def shards(run: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(run)): np.load(p) for p in sorted((run / FILES.probing).rglob("acts-*.npy"))}


def assert_same_result(a: Path, b: Path) -> None:
    sa, sb = shards(a), shards(b)
    assert sa.keys() == sb.keys() and sa
    for key in sa:
        assert np.array_equal(sa[key], sb[key]), key
    for table in SAME:
        assert pq.read_table(a / f"{table}.parquet").equals(pq.read_table(b / f"{table}.parquet")), table
    pa_, pb = pq.read_table(a / "probes.parquet").drop(["seconds"]), pq.read_table(b / "probes.parquet").drop(["seconds"])
    assert pa_.equals(pb)


@pytest.fixture(scope="module")
def reference(mined: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The probing result computed inline (the reference every other executor must equal)."""
    job, run = probe_job(mined, tmp_path_factory.mktemp("ref"), "ref")
    summary = probe(job)
    assert set(summary["concepts"]) == {"pos", "sentiment"}
    return run


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_tables_and_catalog(reference: Path) -> None:
    from miner.query.sql import query_arrow

    for table in PROBE_TABLES:
        assert (reference / f"{table}.parquet").exists(), table
    probes = query_arrow(reference, "SELECT * FROM probes ORDER BY probe_id").to_pylist()
    scopes = {(p["concept"], p["scope"]) for p in probes}
    assert scopes == {("pos", "all"), ("pos", "layer"), ("sentiment", "all"), ("sentiment", "layer")}
    layers = query_arrow(reference, "SELECT count(*) AS n FROM probes WHERE concept = 'pos' AND scope = 'layer'")
    assert layers["n"][0].as_py() == 4  # hidden 1, 2 and mlp 1, 2
    pos = next(p for p in probes if p["probe_id"] == "pos:all")
    assert pos["control_accuracy"] is not None and pos["selectivity"] == pytest.approx(
        pos["test_accuracy"] - pos["control_accuracy"])
    # every unit ranked once per method overall, ranks 1..U
    check = query_arrow(reference, """SELECT method, count(*) AS n, count(DISTINCT unit_id) AS units, max(rank) AS top
        FROM neuron_rankings WHERE probe_id = 'pos:all' AND class IS NULL GROUP BY method ORDER BY method""")
    n_units = query_arrow(reference, "SELECT count(*) AS n FROM units")["n"][0].as_py()
    assert check["method"].to_pylist() == ["ap", "lca", "probeless"]
    assert set(check["n"].to_pylist()) == set(check["units"].to_pylist()) == set(check["top"].to_pylist()) == {n_units}
    # "the top LCA neurons for NN and what their top sentences look like" is one join
    joined = query_arrow(reference, """SELECT r.rank, r.unit_id, u.layer, t.text FROM neuron_rankings r
        JOIN unit_top t USING (unit_id) JOIN units u USING (unit_id)
        WHERE r.probe_id = 'pos:all' AND r.method = 'lca' AND r.class = 'NN' AND r.rank <= 3 AND t.direction = 'top'
        ORDER BY r.rank, t.rank""")
    assert joined.num_rows == 3 * 5
    # the Top / Random / Bottom / All table: one row each per ranking and k
    evals = query_arrow(reference, """SELECT ranking, k_percent, evaluation FROM probe_accuracy
        WHERE probe_id = 'pos:all' AND evaluation IN ('top', 'random', 'bottom')""")
    assert evals.num_rows == 3 * 2 * 3
    # splits by sentence: no sentence in two splits
    leak = query_arrow(reference, """SELECT concept, sentence_id FROM probe_examples GROUP BY ALL
        HAVING count(DISTINCT split) > 1""")
    assert leak.num_rows == 0
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["probe"]["status"] == "complete" and manifest["step2"]["status"] == "complete"


def test_rerun_is_a_no_op(reference: Path) -> None:
    before = {t: (reference / f"{t}.parquet").stat().st_mtime_ns for t in PROBE_TABLES}
    assert main(["probe", str(reference.parent / "ref.yaml"), "--executor", "inline"]) == 0
    assert before == {t: (reference / f"{t}.parquet").stat().st_mtime_ns for t in PROBE_TABLES}


def test_one_and_two_ray_workers_equal_inline(mined: dict, reference: Path, tmp_path: Path, ray_local) -> None:
    one, run_one = probe_job(mined, tmp_path, "one")
    probe(one, "ray", workers=1)
    assert_same_result(reference, run_one)
    two, run_two = probe_job(mined, tmp_path, "two")
    probe(two, "ray", workers=2)
    assert_same_result(reference, run_two)


def test_killed_actor_is_replaced_and_result_identical(mined: dict, reference: Path, tmp_path: Path,
                                                       ray_local) -> None:
    job, run = probe_job(mined, tmp_path, "killed")
    killed: list[int] = []
    finished = threading.Event()

    def kill_one() -> None:
        folder = run / FILES.probing / "pos"
        while not finished.is_set() and not killed:
            if len(list(folder.glob("acts-*.npy"))) >= 2:
                for pid in mining_actor_pids(os.getpid()):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.01)

    t = threading.Thread(target=kill_one)
    t.start()
    try:
        probe(job, "ray", workers=2)
    finally:
        finished.set()
        t.join()
    assert killed, "no actor was killed (extraction finished too fast?)"
    assert_same_result(reference, run)


def test_killed_driver_resumes_identically(mined: dict, reference: Path, tmp_path: Path) -> None:
    job, run = probe_job(mined, tmp_path, "resumed", block_sentences=4)
    cmd = [sys.executable, "-m", "miner.cli", "probe", str(job), "--executor", "inline"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = run / FILES.probing / "pos"
    deadline = time.monotonic() + 300
    while proc.poll() is None and len(list(folder.glob("acts-*.npy"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert not (run / "probes.parquet").exists(), "the stage finished before it could be killed"
    summary = probe(job)
    assert summary["concepts"]["pos"]["extraction"]["reused_blocks"] >= 3
    ref_job, ref_run = probe_job(mined, tmp_path, "fresh", block_sentences=4)
    probe(ref_job)
    assert_same_result(ref_run, run)


def test_torch_probe_matches_scikit_learn_on_real_activations(reference: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    from miner.probing.concepts import ConceptExamples
    from miner.probing.extraction import load_rows
    from miner.probing.probe import ProbeOptions, accuracy, train_probe

    ex_table = pq.read_table(reference / "probe_examples.parquet").filter(
        pq.read_table(reference / "probe_examples.parquet")["concept"].to_numpy(zero_copy_only=False) == "pos")
    classes = sorted(set(ex_table["label"].to_pylist()))
    labels = np.array([classes.index(c) for c in ex_table["label"].to_pylist()])
    split = np.array(ex_table["split"].to_pylist())
    sid = ex_table["sentence_id"].to_numpy()
    _, sent_index = np.unique(sid, return_inverse=True)
    ex = ConceptExamples(name="pos", kind="tags", level="token", classes=classes, texts=[""] * (sent_index.max() + 1),
                         sentence_keys=np.unique(sid), pieces=[], row_sentence=sent_index.astype(np.int64),
                         row_word=np.zeros(len(labels), np.int64), row_text=[""] * len(labels), labels=labels,
                         splits=np.zeros(len(labels), np.int8))
    folder = reference / FILES.probing / "pos"
    x_tr = load_rows(folder, ex, split == "train", PROBE["block_sentences"])
    x_te = load_rows(folder, ex, split == "test", PROBE["block_sentences"])
    y_tr, y_te = labels[split == "train"], labels[split == "test"]
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-8
    l1, l2, n = 1e-3, 1e-4, len(y_tr)
    ours = train_probe(x_tr, y_tr, len(classes), l1, l2, ProbeOptions(epochs=100, lr=5e-2, batch_size=64))
    ours_acc, _ = accuracy(y_te, ours.predict(x_te), len(classes))
    # scikit-learn minimises C sum(loss) + r |w|_1 + (1 - r) / 2 |w|^2: the same objective per sample with
    # r / (C n) = l1 and (1 - r) / (2 C n) = l2
    ratio = l1 / (l1 + 2 * l2)
    c = ratio / (l1 * n)
    sk = LogisticRegression(solver="saga", l1_ratio=ratio, C=c, max_iter=3000, tol=1e-4)
    sk.fit((x_tr - mean) / std, y_tr)
    sk_acc = float((sk.predict((x_te - mean) / std) == y_te).mean())
    assert abs(ours_acc - sk_acc) <= 0.02, (ours_acc, sk_acc)
    present = np.unique(y_tr)
    w_ours, w_sk = ours.weights[present], sk.coef_
    big = np.argsort(-np.abs(w_sk).ravel())[:20]
    agree = np.sign(w_ours.ravel()[big]) == np.sign(w_sk.ravel()[big])
    assert agree.mean() >= 0.9, agree.mean()


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    lines = [line for line in err if line.startswith("miner: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_bad_probe_sections_are_one_line_and_leave_results_untouched(mined: dict, reference: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "bad-run"
    shutil.copytree(reference, run)
    state = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    conllu = tmp_path / "x.conllu"
    conllu.write_text("1\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_\n2\tcat\tcat\tNOUN\tNN\t_\t0\troot\t_\t_\n\n")
    mismatch = write_jsonl(tmp_path / "bad.jsonl", [{"tokens": ["a", "b"], "labels": ["X", "Y"]},
                                                    {"tokens": ["a", "b", "c"], "labels": ["X", "Y"]}])
    one_class = write_jsonl(tmp_path / "one.jsonl", [{"tokens": ["a", "b"], "labels": ["X", "X"]}] * 50)
    rare = write_jsonl(tmp_path / "rare.jsonl", [{"tokens": [f"w{i}", "b"], "labels": ["X", "Y"]} for i in range(60)]
                       + [{"tokens": ["z"], "labels": ["Z"]}])
    cases = [
        ({"concepts": [{"name": "m", "kind": "file", "path": str(mismatch)}]}, "bad.jsonl:2: 3 tokens but 2 labels"),
        ({"concepts": [{"name": "u", "kind": "file", "path": str(conllu), "column": "nope"}]}, "column 'nope'"),
        ({"concepts": [{"name": "f", "kind": "metadata", "field": "mood"}]}, "field 'mood' is not a metadata column"),
        ({"concepts": [{"name": "o", "kind": "file", "path": str(one_class)}]}, "a probe needs at least 2"),
        ({"concepts": [{"name": "r", "kind": "file", "path": str(rare)}], "rare_classes": "error"}, "'Z'"),
        ({"concepts": [{"name": "pos", "kind": "tags"}], "l1_grid": [-0.1]}, "probe.l1_grid.0"),
        ({"concepts": [{"name": "pos", "kind": "tags"}], "k_percent": [150]}, "probe.k_percent.0"),
        ({"concepts": [{"name": "pos", "kind": "tags"}], "k_percent": [0]}, "probe.k_percent.0"),
    ]
    for i, (section, expected) in enumerate(cases):
        job = write_job(tmp_path / f"bad{i}.yaml", **{**mined["fields"], "output": str(run),
                                                      "probe": {**PROBE, "rare_classes": "drop", **section}})
        assert main(["probe", str(job), "--executor", "inline"]) == 2, section
        line = _error_line(capsys)
        assert expected in line, (expected, line)
        assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == state, section
    # a probe section on a run whose step 2 (tags) is missing
    bare = tmp_path / "bare"
    shutil.copytree(mined["base"] / "run", bare)
    for name in ("tokens.parquet",):
        (bare / name).unlink()
    job = write_job(tmp_path / "bare.yaml", **{**mined["fields"], "output": str(bare), "probe": PROBE})
    assert main(["probe", str(job), "--executor", "inline"]) == 2
    assert "run `miner signatures" in _error_line(capsys)
    assert not (bare / FILES.probing).exists() and not (bare / "probes.parquet").exists()


def test_compare_puts_probes_side_by_side(mined: dict, reference: Path) -> None:
    from miner.analysis.compare import compare_runs
    from miner.query.sql import query_arrow

    result = compare_runs([reference, mined["base"] / "run"])
    probed, bare = result["probes"].values()
    assert bare == []
    pos = next(p for p in probed if p["concept"] == "pos")
    want = query_arrow(reference, """SELECT test_accuracy FROM probe_accuracy WHERE probe_id = 'pos:all'
        AND evaluation = 'top' AND ranking = 'lca' AND k_percent = 10 AND class IS NULL""")["test_accuracy"][0].as_py()
    assert pos["subsets"]["lca"]["top_10"] == pytest.approx(want)
