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


def signal_when(args, ready, sig, timeout=300, delay=0.0, **kw) -> bool:
  """Starts `brd ARGS`, waits until `ready()` (or the timeout), sleeps `delay`, then sends SIG if
  the command still runs; waits for it to end. Returns whether the signal landed (a command that
  ended between the check and the signal was not interrupted; for SIGKILL, the exit status says)."""
  import signal
  import time
  kw.setdefault("env", {**os.environ, "JAX_PLATFORMS": "cpu"})
  proc = subprocess.Popen(brd_cmd(*args), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, **kw)
  deadline = time.time() + timeout
  while proc.poll() is None and time.time() < deadline and not ready():
    time.sleep(0.01)
  time.sleep(delay)
  sent = proc.poll() is None
  if sent:
    proc.send_signal(sig)
  proc.wait()
  return sent and (sig != signal.SIGKILL or proc.returncode == -signal.SIGKILL)
