"""Creating decoders directly in their shardings, and moving parameters in and out as flat dicts."""
from __future__ import annotations

from typing import Callable, Iterable

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from brd_jax import sharding
from brd_jax.errors import UserError
from brd_jax.models.config import ModelConfig
from brd_jax.models.layers import Decoder

Path = tuple[str, ...]


def abstract(cfg: ModelConfig) -> Decoder:
  """The model with ShapeDtypeStruct leaves: no memory, for shapes and axes."""
  return nnx.eval_shape(lambda: Decoder(cfg, nnx.Rngs(0)))


def param_specs(cfg: ModelConfig) -> dict[Path, tuple[jax.ShapeDtypeStruct, tuple]]:
  """path -> (ShapeDtypeStruct, logical axes) of every parameter."""
  _, state = nnx.split(abstract(cfg))
  return {path: (v.get_value(), v.get_metadata()["axes"]) for path, v in nnx.to_flat_state(state)}


def param_shardings(cfg: ModelConfig, mesh: Mesh) -> dict[Path, NamedSharding]:
  """NamedSharding per parameter; a dimension that does not split evenly stays replicated."""
  return {path: NamedSharding(mesh, sharding.logical_to_spec(axes, mesh=mesh, shape=sds.shape))
          for path, (sds, axes) in param_specs(cfg).items()}


def create(cfg: ModelConfig, mesh: Mesh | None = None, seed: int = 0) -> Decoder:
  """A randomly initialised model whose parameters are born sharded (jit out_shardings).

  Initialisation is always jitted, so a model is bit-identical with or without a mesh.
  """
  graphdef, abs_state = nnx.split(abstract(cfg))
  paths = [p for p, _ in nnx.to_flat_state(abs_state)]

  def init():
    _, st = nnx.split(Decoder(cfg, nnx.Rngs(seed)))
    flat = dict((p, v.get_value()) for p, v in nnx.to_flat_state(st))
    return [flat[p] for p in paths]

  if mesh is None:
    values = jax.jit(init)()
  else:
    shardings = param_shardings(cfg, mesh)
    with jax.set_mesh(mesh):
      values = jax.jit(init, out_shardings=[shardings[p] for p in paths])()
  return _merge(graphdef, abs_state, dict(zip(paths, values)))


def _merge(graphdef, abs_state, flat: dict[Path, jax.Array]) -> Decoder:
  leaves = nnx.to_flat_state(abs_state)
  for path, var in leaves:
    var.set_value(flat[path])
  return nnx.merge(graphdef, abs_state)


def load(cfg: ModelConfig, tensors: Iterable[tuple[Path, np.ndarray]], mesh: Mesh | None = None,
         source: str = "checkpoint") -> Decoder:
  """Builds a model from (path, host array) pairs, placing each tensor straight into its sharding.

  Only one host tensor is alive at a time; each device receives only its own shard.
  """
  graphdef, abs_state = nnx.split(abstract(cfg))
  specs = param_specs(cfg)
  shardings = param_shardings(cfg, mesh) if mesh is not None else {}
  flat = {}
  for path, arr in tensors:
    if path not in specs:
      raise UserError(f"{source}: unexpected tensor {'/'.join(path)}")
    sds = specs[path][0]
    if tuple(arr.shape) != tuple(sds.shape):
      raise UserError(f"{source}: tensor {'/'.join(path)} has shape {tuple(arr.shape)}, "
                      f"the config expects {tuple(sds.shape)}")
    arr = np.asarray(arr, dtype=sds.dtype)
    flat[path] = place(arr, shardings.get(path))
  missing = sorted("/".join(p) for p in specs if p not in flat)
  if missing:
    raise UserError(f"{source}: missing tensors: {', '.join(missing[:5])}"
                    + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
  return _merge(graphdef, abs_state, flat)


def place(arr: np.ndarray, named: NamedSharding | None) -> jax.Array:
  """Host array -> device array; with a sharding, each device gets only its slice."""
  if named is None:
    return jax.device_put(arr)
  return jax.make_array_from_callback(arr.shape, named, lambda idx: arr[idx])


def flat_params(model: Decoder) -> dict[Path, jax.Array]:
  _, state = nnx.split(model)
  return {path: v.get_value() for path, v in nnx.to_flat_state(state)}


def map_params(model: Decoder, fn: Callable[[Path, jax.Array], jax.Array]) -> Decoder:
  graphdef, state = nnx.split(model)
  for path, var in nnx.to_flat_state(state):
    var.set_value(fn(path, var.get_value()))
  return nnx.merge(graphdef, state)


def functional(model: Decoder):
  """(pure params dict, bind) where bind(params) rebuilds the Decoder; usable inside jit.

  Training code keeps parameters as a plain nested dict (what optax and Orbax see) and binds
  them to a fresh module per trace.
  """
  graphdef, state = nnx.split(model)
  params = nnx.to_pure_dict(state)

  def bind(p) -> Decoder:
    st = jax.tree.map(lambda x: x, state)  # a fresh State per trace: never mutate the template
    nnx.replace_by_pure_dict(st, p)
    return nnx.merge(graphdef, st)

  return params, bind


def pure_shardings(cfg: ModelConfig, mesh: Mesh) -> dict:
  """param_shardings as the nested dict layout of `functional`'s params."""
  out: dict = {}
  for path, s in param_shardings(cfg, mesh).items():
    node = out
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = s
  return out
