"""One process of the 2-process CPU test (run by test_multihost.py): 4 local devices each."""
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

from brd_jax import sharding  # noqa: E402
from brd_jax.checkpoints import hf  # noqa: E402


def main(model_dir, ids_path, out_path):
  assert sharding.initialize() is True
  assert jax.process_count() == 2 and len(jax.devices()) == 8
  mesh = sharding.make_mesh((2, 2, 2))
  model, _ = hf.import_dir(model_dir, mesh=mesh)
  data = np.load(ids_path)
  rows = sharding.host_share(data["ids"].shape[0])
  with sharding.use_mesh(mesh):
    ids = sharding.global_batch(data["ids"][rows], mesh)
    seg = sharding.global_batch(data["mask"][rows], mesh)
    logits = jax.jit(lambda m, t, s: m(t, segment_ids_BT=s)[0])(model, ids, seg)
  from jax.experimental import multihost_utils
  full = multihost_utils.process_allgather(logits, tiled=True)
  if jax.process_index() == 0:
    np.save(out_path, np.asarray(full))


if __name__ == "__main__":
  main(*sys.argv[1:])
