#!/usr/bin/env bash
# Runs the test suite (sets up .venv first). Extra arguments go to pytest, e.g.
#   ./launch/test.sh -m "not slow"      ./launch/test.sh tests/test_models.py -k xglm
set -euo pipefail
export BRD_EXTRAS=test
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest tests -n "${BRD_TEST_WORKERS:-2}" --dist loadfile \
  -p no:cacheprovider -ra --durations=30 "$@"
