"""Ahead-of-time compiles of the real jitted steps for a target topology, on this CPU machine.

Each function lowers the very function a stage runs (the train step of `step.make_train_step`, the
engine's prefill and decode, the scorer's `_score`) against abstract, sharded inputs on the
target's compile-only devices, and returns the compiler's per-device memory. A program that does
not fit is reported, not raised: the TPU compiler refuses it with the bytes it needed; the GPU
compiler only logs, so its peak is compared with HBM by the caller.
"""
from __future__ import annotations

import dataclasses
import re
import time

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from brd_jax import sharding
from brd_jax.models import build

_NEEDS = re.compile(r"\(([\d.]+)([KMGT]?)\)?\s*exceeds\s*(?:the\s*)?available\s*HBM\s*\(([\d.]+)([KMGT]?)\)")
_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


@dataclasses.dataclass
class Compiled:
  what: str
  seconds: float
  peak_bytes: float = 0.0         # compiler's peak per device (0 when it refused)
  argument_bytes: float = 0.0
  temp_bytes: float = 0.0
  needs_bytes: float = 0.0        # from an out-of-memory refusal
  limit_bytes: float = 0.0
  error: str = ""


def _compile(what: str, lower):
  """(Compiled figures, the executable or None when the compiler refused for memory)."""
  t0 = time.perf_counter()
  try:
    compiled = lower().compile()
  except Exception as e:  # pylint: disable=broad-except  # XlaRuntimeError: RESOURCE_EXHAUSTED
    msg = str(e)
    m = _NEEDS.search(msg)
    if not m:
      raise
    return Compiled(what, time.perf_counter() - t0,
                    needs_bytes=float(m.group(1)) * _UNITS[m.group(2)],
                    limit_bytes=float(m.group(3)) * _UNITS[m.group(4)],
                    error=msg.strip().splitlines()[0][:300]), None
  ma = compiled.memory_analysis()
  return Compiled(what, time.perf_counter() - t0, float(ma.peak_memory_in_bytes),
                  float(ma.argument_size_in_bytes), float(ma.temp_size_in_bytes)), compiled


def train_step(cfg, tcfg, seq_len: int, mesh, kd_topk: int = 0) -> Compiled:
  """The trainer's jitted step (`make_train_step`) on its abstract state and a global batch."""
  from brd_jax.training import step as step_lib  # pylint: disable=import-outside-toplevel
  state, bind, tx, shardings = step_lib.abstract_train(cfg, tcfg, mesh)
  batch = step_lib.abstract_batch(tcfg.batch_size, seq_len, mesh, kd_topk)
  fn = step_lib.make_train_step(bind, tx, tcfg, mesh, shardings)

  def lower():
    with sharding.use_mesh(mesh):
      return fn.jitted.lower(state, batch)
  return _compile("train step", lower)[0]


def _model_state(cfg, mesh):
  """(graphdef, abstract nnx State carrying each parameter's sharding)."""
  graphdef, state = nnx.split(build.abstract(cfg))
  shardings = build.param_shardings(cfg, mesh)
  for path, var in nnx.to_flat_state(state):
    v = var.get_value()
    var.set_value(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=shardings[path]))
  return graphdef, state


def _rows_spec(mesh, *trailing):
  return NamedSharding(mesh, sharding.logical_to_spec(("batch",) + trailing, mesh=mesh))


def generate_steps(cfg, batch: int, prompt_len: int, max_new: int, mesh,
                   top_n: int = 0) -> list[Compiled]:
  """The engine's prefill and one decode chunk for `batch` prompts of `prompt_len` tokens."""
  from brd_jax.inference import engine  # pylint: disable=import-outside-toplevel
  graphdef, state = _model_state(cfg, mesh)
  P_, new = engine.bucket(prompt_len), engine.bucket(max_new, 8)
  rows = _rows_spec(mesh, "length")
  tokens = jax.ShapeDtypeStruct((batch, P_), jnp.int32, sharding=rows)
  keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), batch))
  keys = jax.ShapeDtypeStruct(keys.shape, keys.dtype, sharding=_rows_spec(mesh))
  static = dict(sampling_=engine.Sampling(), top_n=top_n, want_lp=True, pad_id=0, eos=(2,))

  def lower_prefill():
    with sharding.use_mesh(mesh):
      return engine._prefill.lower(graphdef, state, None, tokens, tokens, keys,  # pylint: disable=protected-access
                                   max_new=new, **static)
  prefill, compiled = _compile("generate prefill", lower_prefill)
  if compiled is None:
    return [prefill]
  # decode takes the cache and buffers in the shardings prefill hands them over in
  shapes = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        compiled.out_info, compiled.output_shardings)
  cache, buf, done = shapes
  scalar = jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(mesh, P()))

  def lower_decode():
    with sharding.use_mesh(mesh):
      return engine._decode.lower(graphdef, state, None, cache, buf, done, keys, scalar,  # pylint: disable=protected-access
                                  scalar, **static)
  return [prefill, _compile("generate decode", lower_decode)[0]]


def score_step(cfg, rows: int, T: int, mesh, slots: int = 4) -> Compiled:
  """The scorer's `_score` on one packed batch of `rows` x `T` tokens."""
  from brd_jax.inference import scoring  # pylint: disable=import-outside-toplevel
  graphdef, state = _model_state(cfg, mesh)
  bt = jax.ShapeDtypeStruct((rows, T), jnp.int32, sharding=_rows_spec(mesh, "length"))
  bc = jax.ShapeDtypeStruct((rows, slots), jnp.int32, sharding=_rows_spec(mesh, None))
  valid = jax.ShapeDtypeStruct((rows, slots), jnp.bool_, sharding=_rows_spec(mesh, None))

  def lower():
    with sharding.use_mesh(mesh):
      return scoring._score.lower(graphdef, state, bt, bt, bt, bt, bc, bc, valid)  # pylint: disable=protected-access
  return _compile("eval score", lower)[0]
