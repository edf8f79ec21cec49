"""deploy/: the KubeRay manifests, the container build file and the VM scripts agree with the project.

No kubectl, docker or cluster is needed: the manifests are parsed and cross-checked against pyproject.toml,
requirements.lock, the `miner` CLI parser and the job files; the shell scripts are syntax-checked and run
against a stub `ray` that records its arguments.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

import miner
from miner.cli import build_parser
from miner.config import load_job

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CONTAINERFILE = DEPLOY / "container" / "Containerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
RAY_KINDS = {"RayCluster", "RayJob", "RayService", "RayCronJob"}


# ---------------------------------------------------------------- helpers

def _pin(name: str) -> str:
    """The exact version pinned for `name` in pyproject.toml's dependencies."""
    for dep in PYPROJECT["project"]["dependencies"]:
        req = Requirement(dep)
        if req.name.lower() == name:
            specs = list(req.specifier)
            assert len(specs) == 1 and specs[0].operator == "==", f"{dep}: expected an exact pin"
            return specs[0].version
    raise AssertionError(f"{name} is not a dependency in pyproject.toml")


def _lock_pin(name: str) -> str:
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        m = re.match(rf"^{re.escape(name)}==(\S+)$", line.strip(), re.IGNORECASE)
        if m:
            return m.group(1)
    raise AssertionError(f"{name} is not pinned in requirements.lock")


def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def _docs() -> list[tuple[Path, dict]]:
    out = []
    for path in _yaml_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path, doc))
    return out


def _of_kind(kind: str) -> list[tuple[Path, dict]]:
    return [(p, d) for p, d in _docs() if d.get("kind") == kind]


def _cluster_specs() -> list[tuple[str, dict]]:
    """Every RayCluster spec: RayClusters themselves and the rayClusterSpec of each RayJob."""
    specs = [(f"{p.name}:RayCluster/{d['metadata']['name']}", d["spec"]) for p, d in _of_kind("RayCluster")]
    specs += [(f"{p.name}:RayJob/{d['metadata']['name']}", d["spec"]["rayClusterSpec"]) for p, d in _of_kind("RayJob")]
    return specs


def _containers(node: object) -> Iterator[dict]:
    """Every container (and init container) anywhere in a manifest."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


def _ray_container(group: dict) -> dict:
    containers = group["template"]["spec"]["containers"]
    assert containers, "a Ray group needs a container"
    return containers[0]  # KubeRay runs `ray start` in the first container


def _gpu_limit(container: dict) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def _mounts(group: dict) -> set[str]:
    return {m["mountPath"] for m in _ray_container(group).get("volumeMounts", [])}


def _under(path: PurePosixPath, mounts: set[str]) -> bool:
    return any(path == PurePosixPath(m) or PurePosixPath(m) in path.parents for m in mounts)


def _instructions(path: Path) -> list[tuple[str, str]]:
    """Dockerfile instructions (keyword, arguments), continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return out


def _container_args() -> dict[str, str]:
    """ARG defaults declared in the Containerfile."""
    args = {}
    for kw, rest in _instructions(CONTAINERFILE):
        if kw == "ARG":
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
    return args


def _expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), text)


def _copies() -> list[tuple[list[str], PurePosixPath]]:
    """(sources, absolute destination) of each COPY, destinations resolved against WORKDIR."""
    workdir = PurePosixPath("/")
    out = []
    for kw, rest in _instructions(CONTAINERFILE):
        if kw == "WORKDIR":
            workdir = workdir / rest
        elif kw in ("COPY", "ADD"):
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            *sources, dest = words
            dest_path = workdir / dest
            out.append((sources, dest_path))
    return out


def _repo_path(container_path: str) -> Path:
    """Where a file the image copies from the repository (e.g. /app/jobs/x.yaml) lives in this checkout."""
    target = PurePosixPath(container_path)
    for sources, dest in _copies():
        for src in sources:
            if src.endswith("/"):  # a directory copied into dest
                if dest in target.parents:
                    return ROOT / src / target.relative_to(dest)
            elif target == dest / PurePosixPath(src).name or target == dest:
                return ROOT / src
    raise AssertionError(f"{container_path}: not a path the Containerfile copies from the repository")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _parses(argv: list[str]) -> argparse.Namespace:
    """Parse argv (after the program name) with the real `miner` parser; a usage error fails the test."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`miner {shlex.join(argv)}` is not a valid miner command line") from exc


def _rayjob_argv(job: dict) -> list[str]:
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv, "empty entrypoint"
    return argv


# ---------------------------------------------------------------- manifests: parse + required fields

def test_deploy_tree_has_all_pieces() -> None:
    for rel in ("README.md", "container/Containerfile", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml",
                "vm/README.md", "vm/start-head.sh", "vm/start-worker.sh"):
        assert (DEPLOY / rel).is_file(), f"deploy/{rel} missing"
    assert _of_kind("RayCluster") and _of_kind("RayJob")


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_manifest_parses(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path}: no YAML documents"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a manifest must be a mapping"
        assert doc.get("apiVersion") and doc.get("kind"), f"{path}: apiVersion and kind are required"
        assert doc.get("metadata", {}).get("name"), f"{path}: metadata.name is required"
        assert isinstance(doc.get("spec"), dict), f"{path}: spec is required"
        if doc["kind"] in RAY_KINDS:
            assert doc["apiVersion"] == "ray.io/v1", f"{path}: {doc['kind']} must be apiVersion ray.io/v1"


@pytest.mark.parametrize("where,spec", _cluster_specs(), ids=lambda x: x if isinstance(x, str) else "")
def test_cluster_spec(where: str, spec: dict) -> None:
    assert str(spec.get("rayVersion")) == _pin("ray"), f"{where}: rayVersion must be the ray pin {_pin('ray')}"
    head = spec["headGroupSpec"]
    params = head["rayStartParams"]
    assert params.get("num-cpus") == "0", f"{where}: the head must not mine (rayStartParams num-cpus \"0\")"
    assert params.get("dashboard-host") == "0.0.0.0", f"{where}: the Jobs API must listen on 0.0.0.0"
    assert all(isinstance(v, str) for v in params.values()), f"{where}: rayStartParams values must be strings"
    assert _gpu_limit(_ray_container(head)) == 0, f"{where}: the head is a CPU pod"
    groups = spec["workerGroupSpecs"]
    gpu_groups = [g for g in groups if int(g["rayStartParams"].get("num-gpus", "0")) > 0]
    assert gpu_groups, f"{where}: needs a GPU worker group"
    names = [g["groupName"] for g in groups]
    assert len(set(names)) == len(names), f"{where}: groupName must be unique"
    for group in groups:
        gparams = group["rayStartParams"]
        assert all(isinstance(v, str) for v in gparams.values()), f"{where}: rayStartParams values must be strings"
        gpus = int(gparams.get("num-gpus", "0"))
        ray_c = _ray_container(group)
        assert _gpu_limit(ray_c) == gpus, (
            f"{where}/{group['groupName']}: nvidia.com/gpu limit {_gpu_limit(ray_c)} != rayStartParams num-gpus {gpus}")
        requests = ray_c.get("resources", {}).get("requests", {})
        if "nvidia.com/gpu" in requests:
            assert int(requests["nvidia.com/gpu"]) == gpus, f"{where}: GPU request != limit"
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], (
            f"{where}/{group['groupName']}: need minReplicas <= replicas <= maxReplicas")
    # Shared storage: one volume mounted at the same path on the head and every worker.
    head_mounts = _mounts(head)
    assert head_mounts, f"{where}: the head (driver) must mount the shared storage"
    for group in groups:
        assert head_mounts & _mounts(group), f"{where}/{group['groupName']}: no mount shared with the head"


@pytest.mark.parametrize("path,job", _of_kind("RayJob"), ids=lambda x: x.name if isinstance(x, Path) else "")
def test_rayjob_lifecycle_fields(path: Path, job: dict) -> None:
    spec = job["spec"]
    assert isinstance(spec.get("entrypoint"), str) and spec["entrypoint"].strip(), f"{path}: entrypoint required"
    assert spec.get("shutdownAfterJobFinishes") is True, f"{path}: shutdownAfterJobFinishes must be true"
    deadline = spec.get("activeDeadlineSeconds")
    assert isinstance(deadline, int) and not isinstance(deadline, bool) and deadline > 0, (
        f"{path}: activeDeadlineSeconds must be a positive integer")
    ttl = spec.get("ttlSecondsAfterFinished")
    assert isinstance(ttl, int) and ttl >= 0, f"{path}: ttlSecondsAfterFinished must be an integer >= 0"
    assert spec.get("submissionMode") == "K8sJobMode"
    assert "rayClusterSpec" in spec and "clusterSelector" not in spec
    if "runtimeEnvYAML" in spec:
        assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict), f"{path}: runtimeEnvYAML must be a mapping"


# ---------------------------------------------------------------- image and entrypoint vs the project

def test_one_image_everywhere_tagged_with_the_project_version() -> None:
    images = {c["image"] for _, doc in _docs() for c in _containers(doc)}
    assert len(images) == 1, f"manifests use different images: {sorted(images)}"
    image = images.pop()
    repo, _, tag = image.rpartition(":")
    assert repo and "/" in repo, f"{image}: expected registry/name:tag"
    assert tag == VERSION == miner.__version__, f"{image}: tag must be the project version {VERSION}"
    # The build command documented in the Containerfile and deploy/README.md produces that image.
    assert f"-t {image}" in CONTAINERFILE.read_text(), "Containerfile's build command must tag the manifests' image"
    assert f"-t {image}" in (DEPLOY / "README.md").read_text()


@pytest.mark.parametrize("path,job", _of_kind("RayJob"), ids=lambda x: x.name if isinstance(x, Path) else "")
def test_rayjob_entrypoint_is_a_miner_run_of_a_shipped_job(path: Path, job: dict) -> None:
    argv = _rayjob_argv(job)
    scripts = PYPROJECT["project"]["scripts"]
    assert argv[0] in scripts, f"{path}: entrypoint {argv[0]!r} is not a console script of pyproject.toml"
    assert scripts[argv[0]] == "miner.cli:main"
    assert argv[1] in _subcommands(build_parser()), f"{path}: `{argv[0]} {argv[1]}` is not a miner subcommand"
    ns = _parses(argv[1:])
    assert ns.command == "run", f"{path}: the job entrypoint must be `miner run <job.yaml>`"

    # The job file is the one the image copies from this repository, and it is a valid job.
    job_file = _repo_path(ns.job)
    assert job_file.is_file(), f"{path}: {ns.job} -> {job_file} does not exist"
    spec, _ = load_job(job_file)

    # One mining actor per GPU: workers x gpus_per_worker = the cluster's GPUs.
    cluster = job["spec"]["rayClusterSpec"]
    gpus = sum(g["replicas"] * int(g["rayStartParams"].get("num-gpus", "0")) for g in cluster["workerGroupSpecs"])
    assert spec.gpus_per_worker == 1, f"{job_file.name}: gpus_per_worker must be 1 (one actor per GPU)"
    assert spec.workers * spec.gpus_per_worker == gpus, (
        f"{job_file.name}: workers={spec.workers} but {path.name} starts {gpus} GPU(s)")
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] == group["replicas"] == group["maxReplicas"], "a RayJob's GPU count is fixed"
    assert spec.device in ("cuda", "auto")

    # Storage: the driver (head) reads the model and corpus and writes the run folder; every worker reads the model.
    head_mounts = _mounts(cluster["headGroupSpec"])
    paths = {"model": spec.model, "corpus": str(spec.corpus), "output": str(spec.output)}
    for field, value in paths.items():
        p = PurePosixPath(value)
        assert p.is_absolute(), f"{job_file.name}: {field} must be an absolute path on the shared storage"
        assert _under(p, head_mounts), f"{job_file.name}: {field} {value} is not on a volume the head mounts"
    for group in cluster["workerGroupSpecs"]:
        assert _under(PurePosixPath(spec.model), _mounts(group)), (
            f"{job_file.name}: model {spec.model} is not visible on worker group {group['groupName']}")


def test_rayjob_entrypoint_checks_catch_a_broken_entrypoint() -> None:
    """The entrypoint checks above reject a subcommand that does not exist and a job the image does not ship."""
    with pytest.raises(AssertionError):
        _parses(["mien", "/app/jobs/bert-base-gpu.yaml"])
    with pytest.raises(AssertionError):
        _repo_path("/opt/elsewhere/job.yaml")
    assert not _repo_path("/app/jobs/no-such-job.yaml").exists()


# ---------------------------------------------------------------- Containerfile

def test_containerfile_base_image_matches_ray_pin_and_python() -> None:
    instr = _instructions(CONTAINERFILE)
    args = _container_args()
    froms = [_expand(rest, args) for kw, rest in instr if kw == "FROM"]
    assert len(froms) == 1, "one build stage expected"
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-(gpu|cu\d+|cpu)", froms[0].split()[0])
    assert m, f"{froms[0]}: expected the official rayproject/ray:<version>-py<XY>-<platform> image"
    assert m.group(1) == _pin("ray"), f"base image Ray {m.group(1)} != pyproject pin {_pin('ray')}"
    py = f"{m.group(2)}.{m.group(3)}"
    requires = PYPROJECT["project"]["requires-python"]
    assert SpecifierSet(requires).contains(f"{py}.0"), f"base image Python {py} does not satisfy {requires}"
    assert m.group(4) != "cpu", "the default image is the GPU one"


def test_containerfile_installs_the_locked_project_with_cuda_torch() -> None:
    instr = _instructions(CONTAINERFILE)
    args = _container_args()
    runs = [_expand(rest, args) for kw, rest in instr if kw == "RUN"]
    torch_pin = _pin("torch")
    assert _lock_pin("torch").split("+")[0] == torch_pin
    assert args.get("TORCH_VERSION") == torch_pin, "ARG TORCH_VERSION must equal the torch pin"
    assert args.get("TORCH_INDEX", "").startswith("https://download.pytorch.org/whl/cu"), "CUDA torch index expected"
    torch_run = [i for i, r in enumerate(runs) if "--index-url" in r and f"torch=={torch_pin}" in r]
    locked = re.compile(r"pip install\s+(.*\s)?-c requirements\.lock\s+\.(\s|$)")
    project_run = [i for i, r in enumerate(runs) if locked.search(r)]
    assert torch_run, "install torch==<pin> from TORCH_INDEX"
    assert project_run, "install the project with `pip install -c requirements.lock .`"
    assert torch_run[0] < project_run[0], "CUDA torch must be installed before the project"
    copied = {src.rstrip("/") for sources, _ in _copies() for src in sources}
    for needed in ("requirements.lock", "pyproject.toml", "miner", "jobs"):
        assert needed in copied, f"Containerfile must COPY {needed}"
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    workdir = [rest for kw, rest in instr if kw == "WORKDIR"]
    assert workdir and workdir[-1] == "/app"
    assert PurePosixPath("/app/jobs") in {dest for _, dest in _copies()}, "jobs/ must be copied to /app/jobs"


def test_dockerignore_keeps_heavy_and_private_paths_out() -> None:
    patterns = [ln.strip().strip("/") for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    for needed in (".venv", "runs", "data", "cache", ".git"):
        assert needed in patterns, f".dockerignore must exclude {needed}"
    copied = {src.rstrip("/") for sources, _ in _copies() for src in sources}
    assert not copied & set(patterns), f"Containerfile copies excluded paths: {copied & set(patterns)}"


# ---------------------------------------------------------------- shell scripts

SCRIPTS = sorted(DEPLOY.rglob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_strict_and_parse(script: Path) -> None:
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n"), f"{script.name}: bash shebang"
    assert "set -euo pipefail" in text, f"{script.name}: needs set -euo pipefail"
    assert os.access(script, os.X_OK), f"{script.name}: not executable"
    res = subprocess.run(["bash", "-n", str(script)], check=False, capture_output=True, text=True)
    assert res.returncode == 0, f"{script.name}: bash -n: {res.stderr}"


def _stub_venv(tmp_path: Path) -> tuple[Path, Path]:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "ray.log"
    ray = venv / "bin" / "ray"
    ray.write_text(f'#!/usr/bin/env bash\necho "$*" >> {shlex.quote(str(log))}\n')
    ray.chmod(0o755)
    return venv, log


def _run_script(name: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run(["bash", str(DEPLOY / "vm" / name), *args], check=False, capture_output=True,
                          text=True, env={**base, **env}, timeout=60)


def test_start_head_runs_ray_start_head(tmp_path: Path) -> None:
    venv, log = _stub_venv(tmp_path)
    res = _run_script("start-head.sh", [], {"VENV": str(venv), "HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "get-auth-token --generate"
    start = calls[1].split()
    assert start[:2] == ["start", "--head"]
    for flag in ("--port=6379", "--dashboard-host=0.0.0.0", "--dashboard-port=8265", "--num-cpus=0", "--num-gpus=0"):
        assert flag in start, f"{flag} missing from `ray {calls[1]}`"
    assert "miner submit" in res.stdout


def test_start_worker_joins_head_with_its_gpus(tmp_path: Path) -> None:
    venv, log = _stub_venv(tmp_path)
    data = tmp_path / "data"
    env = {"VENV": str(venv), "HOME": str(tmp_path), "DATA_DIR": str(data), "RAY_AUTH_TOKEN": "t", "NUM_GPUS": "2"}
    res = _run_script("start-worker.sh", ["10.0.0.5"], env)
    assert res.returncode == 1 and "not mounted" in res.stderr and not log.exists()  # no shared storage: refuse
    data.mkdir()
    res = _run_script("start-worker.sh", ["10.0.0.5"], {**env, "RAY_AUTH_TOKEN": ""})
    assert res.returncode == 1 and "auth token" in res.stderr and not log.exists()  # no token: refuse
    res = _run_script("start-worker.sh", ["10.0.0.5"], env)
    assert res.returncode == 0, res.stderr
    start = log.read_text().split()
    assert start[0] == "start" and "--head" not in start
    assert "--address=10.0.0.5:6379" in start and "--num-gpus=2" in start
    res = _run_script("start-worker.sh", [], env)
    assert res.returncode == 2 and "usage" in res.stderr


# ---------------------------------------------------------------- documented command lines

_CMD = re.compile(r"^\s*(?:#\s*)?(?:export\s+)?((?:[A-Z_]+=\S*\s+)*)(?:\S*/)?miner\s+(.+)$")


def _documented_commands() -> list[tuple[str, list[str]]]:
    """`miner ...` lines in deploy/ code blocks and manifest comments, and in the GPU job's header."""
    found = []
    for path in [*DEPLOY.rglob("*.md"), *_yaml_files(), ROOT / "jobs" / "bert-base-gpu.yaml"]:
        in_block = path.suffix != ".md"
        for line in path.read_text().splitlines():
            if path.suffix == ".md" and line.strip().startswith("```"):
                in_block = not in_block
                continue
            if not in_block or (path.suffix != ".md" and not line.lstrip().startswith("#")):
                continue
            m = _CMD.match(line)
            if m:
                argv = shlex.split(m.group(2), comments=True)
                found.append((f"{path.relative_to(ROOT)}: {line.strip()}", argv))
    return found


def test_documented_miner_commands_parse() -> None:
    commands = _documented_commands()
    assert any(argv[0] == "submit" for _, argv in commands)
    available = _subcommands(build_parser())
    if "submit" not in available and "jobs" not in available:
        pytest.skip("`miner submit` / `miner jobs` are not in the CLI yet (issue 6, item 1)")
    for where, argv in commands:
        assert argv[0] in available, f"{where}: no subcommand {argv[0]!r}"
        _parses(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
