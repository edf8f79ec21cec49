#!/usr/bin/env bash
# Start the Ray head of a neuron-miner cluster on this VM (see deploy/vm/README.md).
# The head runs the job drivers (they read the corpus and write the run folder) and the Ray Jobs API on
# DASHBOARD_PORT; by default it runs no mining actors (NUM_CPUS=0, NUM_GPUS=0), like the KubeRay head.
#
#   deploy/vm/start-head.sh                 # then, on each GPU VM: deploy/vm/start-worker.sh HEAD_IP
#   NUM_CPUS=16 NUM_GPUS=1 deploy/vm/start-head.sh   # the head mines too
#
# Environment: VENV (default: the repository's .venv, from `make venv`), RAY_PORT (6379), DASHBOARD_PORT (8265),
# NUM_CPUS (0), NUM_GPUS (0), RAY_AUTH_MODE (token: the token is generated once into ~/.ray/auth_token;
# copy that file to every worker VM and every machine that submits jobs).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${VENV:-$repo/.venv}"
ray="$venv/bin/ray"
port="${RAY_PORT:-6379}"
dashboard_port="${DASHBOARD_PORT:-8265}"
num_cpus="${NUM_CPUS:-0}"
num_gpus="${NUM_GPUS:-0}"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if [[ ! -x "$ray" ]]; then
  echo "start-head.sh: $ray not found: run 'make venv' in $repo (or set VENV)" >&2
  exit 1
fi
if [[ "$RAY_AUTH_MODE" == token ]]; then
  "$ray" get-auth-token --generate > /dev/null   # creates ~/.ray/auth_token once; reuses it afterwards
fi

"$ray" start --head \
  --port="$port" \
  --dashboard-host=0.0.0.0 \
  --dashboard-port="$dashboard_port" \
  --num-cpus="$num_cpus" \
  --num-gpus="$num_gpus" \
  --disable-usage-stats

host="$(hostname -I 2>/dev/null | awk '{print $1}')"
host="${host:-$(hostname)}"
echo
echo "Ray head up (auth: $RAY_AUTH_MODE)."
echo "  workers:  deploy/vm/start-worker.sh $host"
echo "  submit:   RAY_AUTH_MODE=$RAY_AUTH_MODE miner submit jobs/bert-base-gpu.yaml --address http://$host:$dashboard_port"
echo "  stop:     $ray stop"
