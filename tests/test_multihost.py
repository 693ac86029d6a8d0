"""Two JAX processes on 127.0.0.1 (gloo collectives) give the logits of one process."""
import os
import socket
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import hf_tiny
from brd_jax.checkpoints import hf

pytestmark = pytest.mark.multiprocess


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
  hf_tiny.llama(tmp_path / "m")
  ids, mask, _ = hf_tiny.left_padded_batch(lengths=(7, 12, 3, 12, 5, 9, 12, 1))
  np.savez(tmp_path / "batch.npz", ids=ids.astype(np.int32), mask=mask.astype(np.int32))
  port = _free_port()
  worker = os.path.join(os.path.dirname(__file__), "multihost_worker.py")
  procs = []
  for i in range(2):
    env = {**os.environ, "BRD_COORDINATOR": f"127.0.0.1:{port}", "BRD_NUM_PROCESSES": "2",
           "BRD_PROCESS_ID": str(i)}
    procs.append(subprocess.Popen(
        [sys.executable, worker, str(tmp_path / "m"), str(tmp_path / "batch.npz"),
         str(tmp_path / "out.npy")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True))
  outs = [p.communicate(timeout=300)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
  got = np.load(tmp_path / "out.npy")
  model, _ = hf.import_dir(tmp_path / "m")
  expected, _ = model(jnp.asarray(ids), segment_ids_BT=jnp.asarray(mask))
  m = mask.astype(bool)
  assert np.abs(got - np.asarray(expected))[m].max() < 1e-5
