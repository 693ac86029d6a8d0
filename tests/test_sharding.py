"""Mesh construction, logical axis rules and sharded parameter placement on 8 CPU devices."""
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from brd_jax import models, sharding
from brd_jax.errors import UserError


def test_resolve_shape_fills_minus_one_and_validates():
  assert sharding.resolve_shape((1, -1, 2), 8) == (1, 4, 2)
  assert sharding.resolve_shape((2, 2, 2), 8) == (2, 2, 2)
  with pytest.raises(UserError, match="mesh.tensor=3"):
    sharding.resolve_shape((1, -1, 3), 8)
  with pytest.raises(UserError, match="mesh product 4 != 8"):
    sharding.resolve_shape((1, 2, 2), 8)
  with pytest.raises(UserError, match="at most one"):
    sharding.resolve_shape((-1, -1, 1), 8)


def test_logical_rules_skip_mesh_axes_already_used(mesh8):
  assert sharding.logical_to_spec(("batch", "length", "embed"), mesh=mesh8) == P(
      ("data", "fsdp"), None, None)
  assert sharding.logical_to_spec(("vocab", "embed"), mesh=mesh8) == P("tensor", "fsdp")
  assert sharding.logical_to_spec(("layers", "embed", "heads", "head_dim"), mesh=mesh8) == P(
      None, "fsdp", "tensor", None)
  one = sharding.make_mesh((1, 8, 1))
  assert sharding.logical_to_spec(("batch", "length"), mesh=one) == P("fsdp", None)


def _bytes_on_device(model, device):
  total = 0
  for arr in models.flat_params(model).values():
    total += sum(s.data.nbytes for s in arr.addressable_shards if s.device == device)
  return total


@pytest.mark.parametrize("shape,shards", [((1, 4, 2), 8), ((2, 2, 2), 4), ((1, 8, 1), 8)])
def test_per_device_parameter_bytes_are_total_over_shards(shape, shards):
  cfg = models.ModelConfig(vocab_size=512, d_model=128, n_layers=2, n_heads=4, n_kv_heads=4,
                           head_dim=32, d_ff=512)
  mesh = sharding.make_mesh(shape)
  model = models.create(cfg, mesh)
  total = sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in models.flat_params(model).values())
  assert total == cfg.num_params() * 4
  for d in jax.devices():
    per = _bytes_on_device(model, d)
    # Only the small norm vectors are not split over every shard axis.
    assert total / shards <= per <= 1.02 * total / shards, (d, per, total / shards)


def test_indivisible_heads_fall_back_to_head_dim():
  # SmolLM2's 9 query / 3 kv heads on tensor=2: head_dim takes the tensor axis instead.
  cfg = models.ModelConfig(n_heads=9, n_kv_heads=3, head_dim=16, d_model=64)
  shardings = models.param_shardings(cfg, sharding.make_mesh((2, 2, 2)))
  assert shardings[("layers", "wq")].spec == P(None, "fsdp", None, "tensor")
  assert shardings[("layers", "wo")].spec == P(None, None, "tensor", "fsdp")
  cfg = models.ModelConfig(n_heads=4, n_kv_heads=4, head_dim=16, d_model=64)
  shardings = models.param_shardings(cfg, sharding.make_mesh((2, 2, 2)))
  assert shardings[("layers", "wq")].spec == P(None, "fsdp", "tensor", None)


def test_indivisible_batch_names_the_binding():
  mesh = sharding.make_mesh((2, 2, 2))
  with pytest.raises(UserError, match="mesh.data=2, mesh.fsdp=2"):
    sharding.global_batch(np.zeros((6, 3), np.int32), mesh)
  arr = sharding.global_batch(np.zeros((8, 3), np.int32), mesh)
  assert arr.sharding.spec == P(("data", "fsdp"), None)


def test_created_model_is_sharded_and_deterministic():
  cfg = models.ModelConfig()
  mesh = sharding.make_mesh((2, 2, 2))
  a = models.create(cfg, mesh, seed=3)
  b = models.create(cfg, seed=3)
  for (path, x), y in zip(models.flat_params(a).items(), models.flat_params(b).values()):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))
  assert a.layers["wq"][...].sharding.spec == P(None, "fsdp", "tensor", None)


def test_host_share_covers_all_items_once():
  assert sharding.host_share(10) == slice(0, 10)  # one process here
  assert sharding.initialize() is False           # no-op for one process
