#!/usr/bin/env bash
# Sourced by the launch scripts: creates .venv once and (re)installs the project only when
# setup.py or the pinned constraints change, so a set-up machine starts in well under a second.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${BRD_VENV:-$ROOT/.venv}
want=$(cat "$ROOT/setup.py" "$ROOT/launch/constraints.txt" | sha256sum | cut -c1-16)
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV" >&2
  "${PYTHON:-python3}" -m venv "$VENV"
fi
if [ "$(cat "$VENV/.brd-installed" 2>/dev/null)" != "$want" ]; then
  echo "installing brd_jax and its pinned dependencies into $VENV (a few minutes, once)" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    -c "$ROOT/launch/constraints.txt" -e "$ROOT[test]" 2> >(grep -v "^WARNING: Location" >&2)
  echo "$want" > "$VENV/.brd-installed"
fi
export PATH="$VENV/bin:$PATH"
