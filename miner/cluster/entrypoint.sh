#!/bin/sh
# Entry point of a job submitted by `miner submit`: runs `python -m miner.cli "$@"` under the Python that
# runs this Ray cluster's workers, so a cluster started from a virtual environment that is not activated
# (`.venv/bin/ray start --head`) still finds the project's packages.
#
# That Python is the first word of the raylet's --python_worker_command; the raylet is an ancestor of this
# shell (raylet -> job supervisor worker -> shell). Off Linux, or if no ancestor is a raylet, `python3` (then
# `python`) on PATH is used. If the chosen Python lacks a dependency the job fails at once with one line
# naming the interpreter and the missing packages (exit status 2), before anything is written.

ray_python() {
    pid=$$
    hops=0
    while [ "$hops" -lt 16 ] && [ -n "$pid" ] && [ "$pid" -gt 1 ] 2>/dev/null; do
        if [ -r "/proc/$pid/cmdline" ]; then
            found=$(tr '\000' '\n' < "/proc/$pid/cmdline" | sed -n 's/^--python_worker_command=\([^ ]*\).*/\1/p' | head -n 1)
            if [ -n "$found" ]; then
                printf '%s\n' "$found"
                return 0
            fi
        fi
        pid=$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$pid/status" 2>/dev/null)
        hops=$((hops + 1))
    done
    return 1
}

py=$(ray_python)
how="the Python of this cluster's Ray workers"
if [ -z "$py" ] || [ ! -x "$py" ]; then
    py=$(command -v python3 || command -v python)
    how="python3 on the head node's PATH ($PATH)"
fi
if [ -z "$py" ]; then
    echo "miner: error: no Python found on the head node (no raylet ancestor, no python3 on PATH $PATH)" >&2
    exit 2
fi
"$py" - "$py" "$how" <<'PY' || exit 2
import importlib.util
import sys

needed = ["miner", "duckdb", "pyarrow", "torch", "transformers", "ray", "yaml", "pydantic"]
missing = [name for name in needed if importlib.util.find_spec(name) is None]
if missing:
    sys.stderr.write(f"miner: error: {sys.argv[1]} ({sys.argv[2]}) cannot import {', '.join(missing)}: install "
                     "neuron-miner's dependencies into it on every node (deploy/container, or `make venv`), or start "
                     "Ray from the environment that has them\n")
    sys.exit(2)
PY
exec "$py" -m miner.cli "$@"
