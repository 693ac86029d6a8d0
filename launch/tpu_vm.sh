#!/usr/bin/env bash
# Runs one `brd` command on every worker of a TPU VM slice (each host runs the same command;
# jax.distributed discovers the topology). Usage:
#   launch/tpu_vm.sh [--dry-run] --tpu NAME --zone ZONE [--project P] [--workers N] -- brd ARGS...
# --workers N starts the command on workers 0..N-1 with one ssh each (so each worker's output and
# exit status are its own); without it, one `--worker=all` ssh. Every worker gets the same
# arguments, gin files included.
set -euo pipefail
dry=0; tpu=""; zone=""; project=""; workers=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1; shift;;
    --tpu) tpu=$2; shift 2;;
    --zone) zone=$2; shift 2;;
    --project) project=$2; shift 2;;
    --workers) workers=$2; shift 2;;
    --) shift; break;;
    *) echo "tpu_vm.sh: unknown flag $1" >&2; exit 2;;
  esac
done
[[ "$workers" =~ ^[0-9]+$ ]] || { echo "tpu_vm.sh: --workers needs a number, got '$workers'" >&2; exit 2; }
[ -n "$tpu" ] && [ -n "$zone" ] && [ $# -gt 0 ] || {
  echo "usage: tpu_vm.sh [--dry-run] --tpu NAME --zone ZONE [--project P] -- brd ARGS..." >&2; exit 2; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Ship the committed tree only (never .venv or run dirs).
tarball=/tmp/brd_jax_$$.tgz
remote="mkdir -p ~/brd_jax && tar xzf ~/brd_jax.tgz -C ~/brd_jax && cd ~/brd_jax && PYTHON=python3 source launch/_venv.sh && pip install -q -e '.[tpu]' -c launch/constraints.txt && $(printf '%q ' "$@")"
scope=${project:+--project $project}
run() { if [ $dry = 1 ]; then echo "$1"; else eval "$1"; fi; }
run "git -C $repo archive --format=tar.gz -o $tarball HEAD"
run "gcloud compute tpus tpu-vm scp $tarball $tpu:~/brd_jax.tgz --zone $zone --worker=all $scope"
if [ "$workers" -gt 0 ]; then
  for ((i = 0; i < workers; i++)); do
    c="gcloud compute tpus tpu-vm ssh $tpu --zone $zone --worker=$i $scope --command $(printf '%q' "$remote")"
    if [ $dry = 1 ]; then echo "$c"; else eval "$c" & fi
  done
  [ $dry = 1 ] || wait
else
  run "gcloud compute tpus tpu-vm ssh $tpu --zone $zone --worker=all $scope --command $(printf '%q' "$remote")"
fi
