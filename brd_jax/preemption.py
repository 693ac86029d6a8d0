"""SIGTERM (preemption) as a flag: long loops finish the unit in hand, commit, and exit cleanly."""
from __future__ import annotations

import signal


class SigtermFlag:
  """`with SigtermFlag() as stop:` ... `if stop.requested:`; the old handler comes back on exit."""

  def __init__(self):
    self.requested = False
    self._old = None

  def __enter__(self):
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. some test runners): no handler
      self._old = None
    return self

  def _handle(self, *_):
    self.requested = True

  def __exit__(self, *_):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)
    return False
