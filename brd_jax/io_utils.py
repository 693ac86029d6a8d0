"""Atomic file writes: a file appears whole or not at all (write temp, fsync, rename)."""
from __future__ import annotations

import contextlib
import os
import pathlib
import sys
import tempfile


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def native_stderr_silenced():
  """Silences C++ writes to fd 2 (TensorFlow's absl start-up lines ignore TF_CPP_MIN_LOG_LEVEL)."""
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)
