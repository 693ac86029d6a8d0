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
def file_lock(path: str | os.PathLike):
  """An exclusive flock on `path` (created) for the duration: one process at a time."""
  import fcntl  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


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


def dir_fingerprint(d, pattern: str = "*.jsonl") -> str:
  """Content hash of a directory's shards (names and bytes); "" when it does not exist."""
  import hashlib  # pylint: disable=import-outside-toplevel
  d = pathlib.Path(d)
  if not d.is_dir():
    return ""
  h = hashlib.sha256()
  for p in sorted(d.glob(pattern)):
    h.update(p.name.encode())
    with open(p, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
  return h.hexdigest()[:16]


def content_digest(*parts, n: int = 16) -> str:
  """A short sha256 of JSON-able parts (keys sorted): the fingerprints stages record."""
  import hashlib  # pylint: disable=import-outside-toplevel
  import json  # pylint: disable=import-outside-toplevel
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:n]
