"""Running `brd` as a user does, in a subprocess from the repository root (CPU JAX)."""
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def brd_cmd(*args) -> list[str]:
  return [sys.executable, "-m", "brd_jax.cli", *map(str, args)]


def brd(*args, **kw) -> subprocess.CompletedProcess:
  kw.setdefault("env", {**os.environ, "JAX_PLATFORMS": "cpu"})
  kw.setdefault("cwd", ROOT)
  return subprocess.run(brd_cmd(*args), capture_output=True, text=True, **kw)
