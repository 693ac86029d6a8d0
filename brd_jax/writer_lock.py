"""One writer per (output directory, process index): a second `brd generate` / `brd corpus` with
the same index there fails at once instead of committing shards of the same names as the first.

Local paths: an `fcntl.flock` on DIR/.writer-pNNNN.lock (holding pid, host and start time for the
error message); the kernel drops it when its process dies, so a SIGKILLed run never blocks its
restart.

Object stores (gs://...) have no locks: DIR/.writer-pNNNN.lock is a lease object, written
create-only (`open(mode="xb")`: gcsfs sends ifGenerationMatch=0; stores without a precondition
check, then write) and rewritten every ttl/4 s by a daemon thread. A lease that changes while a
newcomer watches is alive (refused); one unchanged for `ttl` s is a dead holder's and is taken
over, so no clocks are compared across hosts. A restart right after a kill waits up to `ttl`; a
holder that stalled past `ttl` and finds its lease taken logs an error.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time

from brd_jax.errors import UserError
from brd_jax.io_utils import as_path, is_url

log = logging.getLogger(__name__)
LEASE_TTL_S = 60.0
NAME = ".writer-p{:04d}.lock"  # in the output directory; one per process index


def _held(directory, index: int, what: str, holder: bytes | None) -> UserError:
  try:
    who = "pid {pid} on {host}, since {started}".format(**json.loads(holder or b""))
  except (ValueError, KeyError, TypeError):
    who = "holder unknown"
  return UserError(f"{directory}: another `brd {what}` is writing there as process {index} "
                   f"({who}); wait for it to end or stop it (a dead process's lock frees itself)")


class _FileLock:
  """flock(LOCK_EX | LOCK_NB) on the lock file, kept until `release` or the process's end."""

  def __init__(self, directory, index: int, what: str, info: dict):
    import fcntl
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / NAME.format(index)
    self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(self.fd, 4096, 0)
      os.close(self.fd)
      raise _held(directory, index, what, holder) from None
    except OSError as e:  # a file system without flock (some FUSE mounts): run, but say so
      log.warning("%s: no flock here (%s); a second writer of process %d is not refused", path,
                  e.strerror, index)
    os.ftruncate(self.fd, 0)  # the lock is ours: say who holds it
    os.pwrite(self.fd, json.dumps(info).encode(), 0)

  def release(self) -> None:
    os.ftruncate(self.fd, 0)
    os.close(self.fd)  # the last descriptor closed drops the flock


class _Lease:
  """A lease object on an object store (see the module docstring)."""

  def __init__(self, directory, index: int, what: str, info: dict, ttl: float):
    p = directory / NAME.format(index)
    self.fs, self.key, self.ttl = p.fs, p.path, ttl
    self.info = {**info, "token": os.urandom(8).hex(), "refreshed": 0}
    seen, since = self._read(), time.monotonic()
    if seen is not None:
      log.warning("%s: a lease of process %d is there; is its holder alive? (%.0f s at most)",
                  directory, index, ttl)
    while seen is not None:  # alive if it changes, dead if it does not within ttl
      time.sleep(ttl / 8)
      now = self._read()
      if now is not None and now != seen:
        raise _held(directory, index, what, now)
      if now is not None and time.monotonic() - since > ttl:
        self.fs.rm_file(self.key)
        now = None
      seen = now
    try:
      with self.fs.open(self.key, "xb") as f:
        f.write(json.dumps(self.info).encode())
    except FileExistsError:
      raise _held(directory, index, what, self._read()) from None
    self.stop = threading.Event()
    self.thread = threading.Thread(target=self._refresh, daemon=True, name="brd-writer-lease")
    self.thread.start()

  def _read(self) -> bytes | None:
    with contextlib.suppress(FileNotFoundError):
      return self.fs.cat_file(self.key)
    return None

  def _ours(self) -> bool:
    return self.info["token"].encode() in (self._read() or b"")

  def _refresh(self) -> None:
    while not self.stop.wait(self.ttl / 4):
      try:
        if not self._ours():
          log.error("%s: this process's writer lease was taken over", self.key)
          return
        self.info["refreshed"] += 1
        self.fs.pipe_file(self.key, json.dumps(self.info).encode())
      except Exception as e:  # pylint: disable=broad-except
        log.warning("%s: lease refresh failed (%s); retrying", self.key, e)

  def release(self) -> None:
    self.stop.set()
    self.thread.join()
    if self._ours():
      self.fs.rm_file(self.key)


@contextlib.contextmanager
def hold(directory, process_index: int, what: str, ttl: float = LEASE_TTL_S):
  """The writer lock of (directory, process_index) for the block; UserError when it is taken."""
  d, info = as_path(directory), {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
  lock = _Lease(d, process_index, what, info, ttl) if is_url(d) else \
      _FileLock(d, process_index, what, info)
  try:
    yield lock
  finally:
    lock.release()
