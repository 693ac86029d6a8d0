#!/usr/bin/env bash
# Runs one `brd` command on GPU hosts. One host: runs locally with jax[cuda12]. Several hosts:
# starts the same command on each over ssh with BRD_COORDINATOR / BRD_NUM_PROCESSES /
# BRD_PROCESS_ID set for jax.distributed. Usage:
#   launch/gpu.sh [--dry-run] [--hosts h1,h2,...] [--port 8476] -- brd train --gin_file ...
set -euo pipefail
dry=0; hosts=""; port=8476
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1; shift;;
    --hosts) hosts=$2; shift 2;;
    --port) port=$2; shift 2;;
    --) shift; break;;
    *) echo "gpu.sh: unknown flag $1" >&2; exit 2;;
  esac
done
[ $# -gt 0 ] || { echo "usage: gpu.sh [--dry-run] [--hosts h1,h2] -- brd ARGS..." >&2; exit 2; }
setup="source launch/_venv.sh && pip install -q -e '.[gpu]' -c launch/constraints.txt"
# the memory JAX may take, the same figure `brd plan` checks a plan against (JAX's default is 0.75)
frac=${XLA_CLIENT_MEM_FRACTION:-${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}}
cmd="XLA_CLIENT_MEM_FRACTION=$frac XLA_PYTHON_CLIENT_MEM_FRACTION=$frac $(printf '%q ' "$@")"
if [ -z "$hosts" ]; then
  c="$setup && $cmd"
  if [ $dry = 1 ]; then echo "$c"; else eval "$c"; fi
  exit
fi
IFS=, read -ra hs <<< "$hosts"
n=${#hs[@]}
for i in "${!hs[@]}"; do
  env="BRD_COORDINATOR=${hs[0]}:$port BRD_NUM_PROCESSES=$n BRD_PROCESS_ID=$i"
  c="ssh ${hs[$i]} $(printf '%q' "cd ~/brd_jax && $setup && $env $cmd")"
  if [ $dry = 1 ]; then echo "$c"; else eval "$c" & fi
done
[ $dry = 1 ] || wait
