"""Two JAX processes on 127.0.0.1 (gloo collectives) give the logits of one process."""
import jax.numpy as jnp
import numpy as np
import pytest

import hf_tiny
import two_processes
from brd_jax.checkpoints import hf

pytestmark = pytest.mark.multiprocess


def test_two_processes_match_one(tmp_path):
  hf_tiny.llama(tmp_path / "m")
  ids, mask, _ = hf_tiny.left_padded_batch(lengths=(7, 12, 3, 12, 5, 9, 12, 1))
  np.savez(tmp_path / "batch.npz", ids=ids.astype(np.int32), mask=mask.astype(np.int32))
  two_processes.run("multihost_worker.py", lambda i: (
      tmp_path / "m", tmp_path / "batch.npz", tmp_path / "out.npy"))
  got = np.load(tmp_path / "out.npy")
  model, _ = hf.import_dir(tmp_path / "m")
  expected, _ = model(jnp.asarray(ids), segment_ids_BT=jnp.asarray(mask))
  m = mask.astype(bool)
  assert np.abs(got - np.asarray(expected))[m].max() < 1e-5
