"""Mesh (data, fsdp, tensor), logical axis rules, multi-host init and array placement.

Parameters and activations carry logical axis names (`embed`, `mlp`, `heads`, ...). The rules
below map each name to mesh axes; a mesh axis already taken by an earlier dimension of the same
array is skipped, so `("batch", "length", "embed")` activations shard batch over (data, fsdp)
while `("vocab", "embed")` parameters shard embed over fsdp.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
from typing import Sequence

import gin
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from brd_jax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axes, tried in order (first unused wins).
DEFAULT_RULES: tuple[tuple[str, object], ...] = (
    ("batch", ("data", "fsdp")),
    ("batch", "data"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("vocab", "tensor"),
    ("length", None),
    ("head_dim", "tensor"),  # fallback when the head count does not split (e.g. 9 heads / 2)
    ("layers", None),
)


@gin.configurable("mesh")
def mesh_shape(data: int = 1, fsdp: int = -1, tensor: int = 1) -> tuple[int, int, int]:
  """The mesh shape as bound in gin (`mesh.data`, `mesh.fsdp`, `mesh.tensor`); -1 = the rest."""
  return data, fsdp, tensor


def resolve_shape(shape: Sequence[int], n_devices: int) -> tuple[int, ...]:
  """Fills one -1 with the remaining devices; errors name the gin bindings."""
  shape = tuple(int(s) for s in shape)
  desc = ", ".join(f"mesh.{n}={s}" for n, s in zip(MESH_AXES, shape))
  if shape.count(-1) > 1:
    raise UserError(f"at most one mesh axis may be -1 ({desc})")
  if any(s == 0 or s < -1 for s in shape):
    raise UserError(f"mesh axes must be positive or -1 ({desc})")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if n_devices % known:
      raise UserError(f"{n_devices} devices are not divisible by the fixed mesh axes ({desc})")
    shape = tuple(n_devices // known if s == -1 else s for s in shape)
  if math.prod(shape) != n_devices:
    raise UserError(f"mesh product {math.prod(shape)} != {n_devices} devices ({desc})")
  return shape


def make_mesh(shape: Sequence[int] | None = None, devices=None) -> Mesh:
  """Builds the (data, fsdp, tensor) mesh; shape defaults to the gin `mesh.*` bindings."""
  devices = list(devices if devices is not None else jax.devices())
  shape = resolve_shape(shape if shape is not None else mesh_shape(), len(devices))
  if devices == list(jax.devices()):
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def logical_to_spec(names: Sequence[str | None], rules=DEFAULT_RULES, mesh: Mesh | None = None,
                    shape: Sequence[int] | None = None) -> P:
  """Maps logical axis names to a PartitionSpec.

  Mesh axes of size 1 are dropped. With `shape`, a candidate that does not divide its dimension
  is skipped, leaving the mesh axis free for a later dimension (9 heads on tensor=2 shard
  head_dim instead).
  """
  used: set[str] = set()
  out = []
  for d, name in enumerate(names):
    chosen = None
    for rule_name, axes in rules:
      if rule_name != name or axes is None:
        continue
      axes_t = (axes,) if isinstance(axes, str) else tuple(axes)
      if mesh is not None:
        axes_t = tuple(a for a in axes_t if mesh.shape[a] > 1)
      if not axes_t or used.intersection(axes_t):
        continue
      if shape is not None and mesh is not None and shape[d] % math.prod(
          mesh.shape[a] for a in axes_t):
        continue
      chosen = axes_t
      break
    if chosen:
      used.update(chosen)
      out.append(chosen[0] if len(chosen) == 1 else chosen)
    else:
      out.append(None)
  return P(*out)


def named_sharding(mesh: Mesh, names: Sequence[str | None], rules=DEFAULT_RULES,
                   shape: Sequence[int] | None = None) -> NamedSharding:
  return NamedSharding(mesh, logical_to_spec(names, rules, mesh, shape))


def multi_device(mesh: Mesh | None) -> Mesh | None:
  """The mesh when it spans several devices, else None (one device needs no shardings)."""
  return mesh if mesh is not None and mesh.size > 1 else None


def host_mesh() -> Mesh:
  """The gin mesh over this process's own devices: for work shared between processes
  (generation), where each host runs its own replica."""
  return make_mesh(devices=jax.local_devices())


def batch_multiple(mesh: Mesh | None) -> int:
  """How many devices the batch dimension is split over (batch sizes must be a multiple)."""
  if mesh is None:
    return 1
  spec = logical_to_spec(("batch",), mesh=mesh)[0]
  axes = (spec,) if isinstance(spec, str) else (spec or ())
  return math.prod(mesh.shape[a] for a in axes)


def check_divisible(shape: Sequence[int], spec: P, mesh: Mesh, what: str) -> None:
  """Raises UserError if a dimension does not split evenly over its mesh axes."""
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    if axes is None:
      continue
    axes_t = (axes,) if isinstance(axes, str) else tuple(axes)
    n = math.prod(mesh.shape[a] for a in axes_t)
    if dim % n:
      binding = ", ".join(f"mesh.{a}={mesh.shape[a]}" for a in axes_t)
      raise UserError(f"{what}: dimension {dim} is not divisible by {binding}")


# The active (mesh, rules) for activation constraints inside model code.
_ACTIVE: list[tuple[Mesh, tuple]] = []


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules=DEFAULT_RULES):
  """Makes `constrain` place activations on this mesh (also enters jax.set_mesh)."""
  _ACTIVE.append((mesh, rules))
  try:
    with jax.set_mesh(mesh):
      yield mesh
  finally:
    _ACTIVE.pop()


def active_mesh() -> Mesh | None:
  return _ACTIVE[-1][0] if _ACTIVE else None


def platform() -> str:
  """The platform code is being traced for: the active mesh's devices (so ahead-of-time compiles
  for TPU or GPU from this CPU pick the target's kernels), else JAX's default backend."""
  mesh = active_mesh()
  if mesh is not None:
    return mesh.devices.flat[0].platform
  return jax.default_backend()


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """with_sharding_constraint by logical names; a no-op outside `use_mesh`."""
  if not _ACTIVE:
    return x
  mesh, rules = _ACTIVE[-1]
  if mesh.size == 1:
    return x
  return jax.lax.with_sharding_constraint(x, named_sharding(mesh, names, rules, x.shape))


def global_batch(local: np.ndarray, mesh: Mesh, names=("batch", "length")) -> jax.Array:
  """Builds one global array from each host's slice of the batch (rows split by process)."""
  local = np.asarray(local)
  spec = logical_to_spec(names, mesh=mesh)
  global_shape = (local.shape[0] * jax.process_count(),) + local.shape[1:]
  check_divisible(global_shape, spec, mesh, f"global batch of shape {global_shape}")
  return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), local, global_shape)


def process_share(num_processes: int, process_index: int, what: str) -> tuple[int, int]:
  """(n, i) of a stage's work sharing: the configured values, or JAX's process count / index
  (after `initialize()`, so on a pod every worker running the same command gets its own)."""
  n, i = num_processes, process_index
  if n <= 0 or i < 0:
    initialize()
    n = n if n > 0 else jax.process_count()
    i = i if i >= 0 else jax.process_index()
  if not 0 <= i < n:
    raise UserError(f"{what}.process_index={i} is not in [0, {n})")
  return n, i


def host_share(n: int) -> slice:
  """This process's contiguous share of n items (for data and generation work)."""
  k, i = jax.process_count(), jax.process_index()
  per = -(-n // k)
  return slice(min(i * per, n), min((i + 1) * per, n))


@gin.configurable("distributed")
def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """jax.distributed.initialize on multi-host runs; a no-op for one process.

  On TPU VMs all arguments are discovered from the environment; on GPU hosts and CPU tests they
  come from gin or from BRD_COORDINATOR / BRD_NUM_PROCESSES / BRD_PROCESS_ID.
  """
  coordinator_address = coordinator_address or os.environ.get("BRD_COORDINATOR")
  num_processes = num_processes or int(os.environ.get("BRD_NUM_PROCESSES", "0") or 0) or None
  if process_id is None and os.environ.get("BRD_PROCESS_ID"):
    process_id = int(os.environ["BRD_PROCESS_ID"])
  tpu_multihost = "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if not tpu_multihost and (num_processes or 1) <= 1:
    return False
  if jax.distributed.is_initialized():
    return True
  logging.info("jax.distributed.initialize(%s, %s, %s)", coordinator_address, num_processes,
               process_id)
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  return True
