#!/usr/bin/env bash
# Join this VM to a neuron-miner Ray cluster as a worker (see deploy/vm/README.md).
#
#   deploy/vm/start-worker.sh HEAD_HOST              # NUM_GPUS: all GPUs nvidia-smi lists (0 without one)
#   NUM_GPUS=4 NUM_CPUS=32 deploy/vm/start-worker.sh 10.0.0.5
#
# One mining actor runs per GPU (the job's gpus_per_worker: 1): a job's `workers` = GPUs in the cluster.
# Environment: VENV (default: the repository's .venv), RAY_PORT (6379), NUM_GPUS, NUM_CPUS (default: all
# cores), DATA_DIR (default /data: the shared mount that must hold the model folders; checked to exist),
# RAY_AUTH_MODE (token: ~/.ray/auth_token must be the head's, copied here).
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 HEAD_HOST" >&2
  exit 2
fi
head_host="$1"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${VENV:-$repo/.venv}"
ray="$venv/bin/ray"
port="${RAY_PORT:-6379}"
data_dir="${DATA_DIR:-/data}"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if [[ ! -x "$ray" ]]; then
  echo "start-worker.sh: $ray not found: run 'make venv' in $repo (or set VENV)" >&2
  exit 1
fi
if [[ ! -d "$data_dir" ]]; then
  echo "start-worker.sh: $data_dir is not mounted: mining actors load the model folder from the shared storage" >&2
  exit 1
fi
if [[ "$RAY_AUTH_MODE" == token && -z "${RAY_AUTH_TOKEN:-}" && -z "${RAY_AUTH_TOKEN_PATH:-}" \
      && ! -s "$HOME/.ray/auth_token" ]]; then
  echo "start-worker.sh: no Ray auth token: copy the head's ~/.ray/auth_token here (or set RAY_AUTH_TOKEN)" >&2
  exit 1
fi

if [[ -z "${NUM_GPUS:-}" ]]; then
  if command -v nvidia-smi > /dev/null 2>&1; then
    NUM_GPUS="$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)"
  else
    NUM_GPUS=0
  fi
fi
args=(--address="$head_host:$port" --num-gpus="$NUM_GPUS" --disable-usage-stats)
if [[ -n "${NUM_CPUS:-}" ]]; then
  args+=(--num-cpus="$NUM_CPUS")
fi

"$ray" start "${args[@]}"
echo "Ray worker joined $head_host:$port with $NUM_GPUS GPU(s) (auth: $RAY_AUTH_MODE)."
