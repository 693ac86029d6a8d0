#!/usr/bin/env bash
# Sourced by the launch scripts: creates .venv once and (re)installs the project only when
# setup.py or the pinned constraints change, so a set-up machine starts in well under a second.
#   $BRD_EXTRAS  the extras to install with the package ('' : what running brd needs, the main
#                job's lean set; 'test' : + torch, lm-eval, libtpu, ... for the tests)
# A venv that already holds the extras asked for (or more) is used as it is.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${BRD_VENV:-$ROOT/.venv}
EXTRAS=${BRD_EXTRAS-}
want=$(cat "$ROOT/setup.py" "$ROOT/launch/constraints.txt" | sha256sum | cut -c1-16)
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV" >&2
  "${PYTHON:-python3}" -m venv "$VENV"
fi
read -r have_hash have_extras < <(cat "$VENV/.brd-installed" 2>/dev/null; echo) || true
if [ "${have_hash:-}" != "$want" ] || { [ -n "$EXTRAS" ] && [ "${have_extras:-}" != "$EXTRAS" ]; }; then
  spec="$ROOT${EXTRAS:+[$EXTRAS]}"
  echo "installing brd_jax${EXTRAS:+[$EXTRAS]} and its pinned dependencies into $VENV (a few minutes, once)" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    -c "$ROOT/launch/constraints.txt" -e "$spec" 2> >(grep -v "^WARNING: Location" >&2)
  echo "$want $EXTRAS" > "$VENV/.brd-installed"
fi
export PATH="$VENV/bin:$PATH"
