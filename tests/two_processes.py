"""Two JAX processes on 127.0.0.1 (gloo collectives), for the multi-process tests."""
import os
import socket
import subprocess
import sys


def run(worker: str, argv_of, timeout: int = 300) -> list[str]:
  """Runs tests/WORKER as process 0 and 1 (argv_of(i): its arguments); returns their outputs,
  asserting both exit 0."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  path = os.path.join(os.path.dirname(__file__), worker)
  procs = []
  for i in range(2):
    env = {**os.environ, "BRD_COORDINATOR": f"127.0.0.1:{port}", "BRD_NUM_PROCESSES": "2",
           "BRD_PROCESS_ID": str(i)}
    procs.append(subprocess.Popen([sys.executable, path, *map(str, argv_of(i))], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  outs = [p.communicate(timeout=timeout)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
  return outs
