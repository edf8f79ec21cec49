"""The package's layering, checked by walking every import (top-level and inside functions) with `ast`.

Levels (a module may import its own package, and packages of a lower level):

    0  errors, atomic, outputs, config, config_export      (miner/__init__ too; these import each other)
    1  corpus, model, run, cluster                          (run may use corpus: the run's corpus)
    2  mining
    3  signatures (which runs explain's scores in step 2), analysis, query, probing, correlate, explain
    4  report
    5  serve (the web app over report's records and templates)
    6  cli

`ray` is imported only in miner/cluster/ and the mining executor; `torch` only where a model runs
(miner/model/, miner/mining/, the probe trainer, the report's token activations).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "miner"
LEVELS = {
    "errors": 0, "atomic": 0, "hashing": 0, "outputs": 0, "config": 0, "config_export": 0, "__init__": 0,
    "corpus": 1, "model": 1, "run": 1, "cluster": 1,
    "mining": 2,
    "signatures": 3, "analysis": 3, "query": 3, "probing": 3, "correlate": 3, "explain": 3,
    "intervene": 4, "report": 4,
    "serve": 5,
    "cli": 6,
}
# Same-level imports that are part of the design.
ALLOWED = {("run", "corpus"), ("signatures", "explain")}
RAY_ALLOWED = ("cluster/", "mining/executors.py")
TORCH_ALLOWED = ("model/", "mining/", "probing/probe.py", "report/activations.py", "intervene/")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _unit(path: Path) -> str:
    """The top-level unit a file belongs to: 'mining' for miner/mining/topn.py, 'cli' for miner/cli/main.py."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in a file, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = ["miner", *path.relative_to(PACKAGE).with_suffix("").parts]
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            if base == "miner":  # from miner import atomic: the names are modules
                found += [(f"miner.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((base, node.lineno))
    return found


def test_every_file_has_a_level() -> None:
    missing = sorted({_unit(p) for p in _modules()} - LEVELS.keys())
    assert not missing, f"add these to LEVELS: {missing}"


def test_no_lower_level_imports_a_higher_one() -> None:
    bad = []
    for path in _modules():
        unit = _unit(path)
        for name, line in _imports(path):
            parts = name.split(".")
            if parts[0] != "miner" or len(parts) < 2 or parts[1] == "__version__":
                continue
            target = parts[1]
            if target == unit or target not in LEVELS:
                continue
            same_level = LEVELS[target] == LEVELS[unit] and LEVELS[unit] > 0  # level 0 modules use each other
            if (LEVELS[target] > LEVELS[unit] or same_level) and (unit, target) not in ALLOWED:
                bad.append(f"{path.relative_to(PACKAGE)}:{line} ({unit}, level {LEVELS[unit]}) imports {name} "
                           f"(level {LEVELS[target]})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(("library", "allowed"), [("ray", RAY_ALLOWED), ("torch", TORCH_ALLOWED)])
def test_heavy_libraries_stay_where_they_belong(library: str, allowed: tuple[str, ...]) -> None:
    bad = [f"{path.relative_to(PACKAGE)}:{line} imports {name}"
           for path in _modules() for name, line in _imports(path)
           if name.split(".")[0] == library and not str(path.relative_to(PACKAGE)).startswith(allowed)]
    assert not bad, "\n".join(bad)


def test_import_graph_has_no_cycle() -> None:
    """Module-level graph (every import, lazy ones included) is acyclic."""
    graph: dict[str, set[str]] = {}
    names = {".".join(["miner", *p.relative_to(PACKAGE).with_suffix("").parts]).removesuffix(".__init__"): p
             for p in _modules()}
    for name, path in names.items():
        graph[name] = set()
        for target, _ in _imports(path):
            while target and target not in names:
                target = target.rpartition(".")[0]
            if target and target != name and target != "miner":
                graph[name].add(target)
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


@pytest.mark.parametrize(("module", "absent"), [
    ("miner.cli", ("torch", "duckdb", "jinja2", "pyarrow", "ray")),       # `miner --help`
    ("miner.signatures.stage", ("torch",)),                             # step 2 runs no model
    ("miner.cluster.jobs", ("torch",)),                                 # `miner submit`
    ("miner.query.sql", ("torch", "ray")),
])
def test_entry_points_do_not_import_heavy_libraries(module: str, absent: tuple[str, ...]) -> None:
    """What importing an entry point pulls in, transitively (a fresh interpreter)."""
    import subprocess
    import sys

    probe = f"import sys, {module}; print(' '.join(sorted(m for m in {absent!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [], f"importing {module} imports {out.stdout.strip()}"
