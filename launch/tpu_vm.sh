#!/usr/bin/env bash
# Runs one `brd` command on every worker of a TPU VM slice (each host runs the same command;
# jax.distributed discovers the topology). Usage:
#   launch/tpu_vm.sh [--dry-run] --tpu NAME --zone ZONE [--project P] -- brd train --gin_file ...
set -euo pipefail
dry=0; tpu=""; zone=""; project=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1; shift;;
    --tpu) tpu=$2; shift 2;;
    --zone) zone=$2; shift 2;;
    --project) project=$2; shift 2;;
    --) shift; break;;
    *) echo "tpu_vm.sh: unknown flag $1" >&2; exit 2;;
  esac
done
[ -n "$tpu" ] && [ -n "$zone" ] && [ $# -gt 0 ] || {
  echo "usage: tpu_vm.sh [--dry-run] --tpu NAME --zone ZONE [--project P] -- brd ARGS..." >&2; exit 2; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Ship the committed tree only (never .venv or run dirs).
tarball=/tmp/brd_jax_$$.tgz
remote="mkdir -p ~/brd_jax && tar xzf ~/brd_jax.tgz -C ~/brd_jax && cd ~/brd_jax && PYTHON=python3 source launch/_venv.sh && pip install -q -e '.[tpu]' -c launch/constraints.txt && $(printf '%q ' "$@")"
cmds=(
  "git -C $repo archive --format=tar.gz -o $tarball HEAD"
  "gcloud compute tpus tpu-vm scp $tarball $tpu:~/brd_jax.tgz --zone $zone --worker=all ${project:+--project $project}"
  "gcloud compute tpus tpu-vm ssh $tpu --zone $zone --worker=all ${project:+--project $project} --command $(printf '%q' "$remote")"
)
for c in "${cmds[@]}"; do
  if [ $dry = 1 ]; then echo "$c"; else eval "$c"; fi
done
