"""Paths that are local or on object storage, and writes that appear whole or not at all.

A workdir may be local (a POSIX file system, shared or not) or a URL (`gs://bucket/run`, through
fsspec and gcsfs). Local files commit by write-temp, fsync, rename; an object store publishes an
object only when its upload completes, so a URL file is written in place: either way a reader
never sees half a file. Directories on object stores are key prefixes: no rename, no lock.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

from brd_jax.errors import UserError


def is_url(p) -> bool:
  return "://" in str(p) or hasattr(p, "protocol") and p.protocol not in ("", "file", "local")


def as_path(p):
  """`pathlib.Path` for a local path; a universal_pathlib UPath (fsspec) for a URL such as
  gs://bucket/run, which pathlib would mangle into gs:/bucket/run."""
  if not is_url(p):
    return pathlib.Path(p)
  try:
    from upath import UPath
    return UPath(str(p))
  except ImportError as e:
    raise UserError(f"{p}: object-storage paths need universal-pathlib and gcsfs: pip install "
                    f"'brd_jax[gcs]' ({e})") from None


def rmtree(p) -> None:
  """Removes a directory (or key prefix) and everything under it; absent is fine."""
  p = as_path(p)
  if is_url(p):
    if p.exists():
      p.fs.rm(p.path, recursive=True)
  else:
    shutil.rmtree(p, ignore_errors=True)


def local_copy(d) -> pathlib.Path:
  """A local directory with the files of `d`: `d` itself when local, else a download into a
  temporary directory (for libraries that read only local files, such as tokenizers)."""
  d = as_path(d)
  if not is_url(d):
    return d
  out = pathlib.Path(tempfile.mkdtemp(prefix="brd-"))
  for f in d.iterdir():
    if f.is_file():
      (out / f.name).write_bytes(f.read_bytes())
  return out


def upload_dir(local: pathlib.Path, d) -> None:
  """Copies the files of a local directory into `d` (local or URL), each whole."""
  for f in sorted(pathlib.Path(local).iterdir()):
    if f.is_file():
      atomic_write_bytes(as_path(d) / f.name, f.read_bytes())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  path = as_path(path)
  if is_url(path):
    path.write_bytes(data)  # one object, published when its upload completes
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with naming(path), os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


@contextlib.contextmanager
def naming(path):
  """An OSError raised inside without a file name gets PATH (a write to an open file has none)."""
  try:
    yield
  except OSError as e:
    if e.errno is not None and not e.filename:
      raise OSError(e.errno, e.strerror, str(path)) from None
    raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  atomic_write_bytes(path, text.encode("utf-8"))


def iter_jsonl(path, skip_bad: bool = False):
  """(line number, value) for each non-blank line of a JSONL file (local or URL), the one reader
  of the project's JSONL shards. A line that is not UTF-8 JSON raises a UserError naming
  `path:line`, or with `skip_bad` (shards that may end in a torn line) comes as (line, None)."""
  with as_path(path).open("rb") as f:
    for lineno, raw in enumerate(f, 1):
      try:
        text = raw.decode("utf-8")
        if not text.strip():  # str.strip: a line of Unicode spaces is blank too
          continue
        yield lineno, json.loads(text)
      except (UnicodeDecodeError, json.JSONDecodeError) as e:
        if not skip_bad:
          raise UserError(f"{path}:{lineno}: not a UTF-8 JSON line ({e})") from None
        yield lineno, None


def read_records(path, fields=()) -> list[dict]:
  """A user's JSONL file as dicts that each hold the string `fields`; anything else is one
  UserError line (missing file, bad UTF-8 or JSON, a line without a field)."""
  try:
    rows = list(iter_jsonl(path))
  except FileNotFoundError:
    raise UserError(f"{path}: no such file") from None
  for lineno, r in rows:
    if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in fields):
      want = ", ".join(f'"{k}"' for k in fields)
      raise UserError(f"{path}:{lineno}: each line needs string field(s) {want}")
  return [r for _, r in rows]


def write_jsonl(path, records) -> int:
  """Writes dicts as JSONL (UTF-8, not ASCII-escaped) atomically; returns the count."""
  lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
  atomic_write_text(path, "".join(lines))
  return len(lines)


def save_figure(fig, path, dpi: int = 110) -> None:
  """A matplotlib figure, in the format its suffix names, written whole; the figure is closed."""
  import io
  import matplotlib.pyplot as plt
  path = as_path(path)
  buf = io.BytesIO()
  fig.savefig(buf, format=path.suffix[1:] or "png", dpi=dpi)
  plt.close(fig)
  atomic_write_bytes(path, buf.getvalue())


class ObjectAppender:
  """Appending for object stores, which cannot append: the whole file is rewritten, at most every
  `every_s` seconds and on close (a kill loses at most that much of the log, never the file)."""

  def __init__(self, path, every_s: float = 30.0):
    self.path, self.every_s = path, every_s
    self.text = path.read_text() if path.exists() else ""
    self.saved = time.time()

  def write(self, line: str) -> None:
    self.text += line

  def flush(self, force: bool = False) -> None:
    if force or time.time() - self.saved >= self.every_s:
      atomic_write_text(self.path, self.text)
      self.saved = time.time()

  def close(self) -> None:
    self.flush(force=True)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike):
  """An exclusive flock on `path` (created) for the duration: one process at a time. Local paths
  only: callers on object storage elect one writer instead."""
  import fcntl
  if is_url(path):
    raise ValueError(f"file_lock({path}): object stores have no locks")
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
  import hashlib
  d = as_path(d)
  if not d.is_dir():
    return ""
  h = hashlib.sha256()
  for p in sorted(d.glob(pattern), key=lambda q: q.name):
    h.update(p.name.encode())
    with p.open("rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
  return h.hexdigest()[:16]


def content_digest(*parts, n: int = 16) -> str:
  """A short sha256 of JSON-able parts (keys sorted): the fingerprints stages record."""
  import hashlib
  return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:n]
