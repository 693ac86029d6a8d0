"""SIGTERM (preemption) as a flag: long loops finish the unit in hand, commit, and exit cleanly.

Flags nest: a stage's flag inside `brd pipeline`'s sees the signal and so does the pipeline's
(`requested()` says whether any SIGTERM arrived in this process).
"""
from __future__ import annotations

import signal

_SEEN = False


def requested() -> bool:
  """True once a SIGTERM arrived while any SigtermFlag was active."""
  return _SEEN


class SigtermFlag:
  """`with SigtermFlag() as stop:` ... `if stop.requested:`; the old handler comes back on exit."""

  def __init__(self):
    self.requested = False
    self._old = None

  def __enter__(self):
    global _SEEN  # pylint: disable=global-statement
    _SEEN = False if not isinstance(signal.getsignal(signal.SIGTERM), _Handler) else _SEEN
    try:
      self._old = signal.signal(signal.SIGTERM, _Handler(self))
    except ValueError:  # not the main thread (e.g. some test runners): no handler
      self._old = None
    self.requested = _SEEN
    return self

  def __exit__(self, *_):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)
    return False


class _Handler:
  """Sets its flag, then passes the signal to an enclosing flag's handler."""

  def __init__(self, flag: SigtermFlag):
    self.flag = flag
    self.outer = signal.getsignal(signal.SIGTERM)

  def __call__(self, signum, frame):
    global _SEEN  # pylint: disable=global-statement
    _SEEN = True
    self.flag.requested = True
    if isinstance(self.outer, _Handler):
      self.outer(signum, frame)
