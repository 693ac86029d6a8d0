"""Ahead-of-time compiles of the real jitted steps for a target topology, on this CPU machine.

Each function lowers the very function a stage runs (the train step of `step.make_train_step`,
the teacher engine's preamble prefill, insertion and decode steps, the scorer's `_score`) against
abstract, sharded inputs on the target's compile-only devices, and returns the compiler's
per-device memory. A program that does not fit is reported, not raised: the TPU compiler refuses it
with the bytes it needed; the GPU compiler only logs, so its peak is compared with HBM by the
caller.
"""
from __future__ import annotations

import dataclasses
import functools
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
  from brd_jax.training import step as step_lib
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


def _abstract(mesh, shape, dtype, names):
  return jax.ShapeDtypeStruct(shape, dtype,
                              sharding=sharding.named_sharding(mesh, names, shape=shape))


def slot_steps(cfg, sh: dict[str, int], max_new: int, k: int, mesh,
               top_n: int = 0) -> list[Compiled]:
  """`brd generate`'s engine (`inference.slots`) at its shapes `sh` (`slots.slot_shapes`): the
  shared preamble's prefill, the insertion of a full batch of prompts, and one chunk of decode
  (verify) steps with k drafts, on the state the engine keeps (`SlotEngine._init_state`) in the
  shardings it gives it."""
  from brd_jax.inference import sampling, slots as slots_lib
  from brd_jax.models import cache as cache_lib
  graphdef, state = _model_state(cfg, mesh)
  dtype = jnp.dtype(cfg.dtype)
  L, K, H = cfg.n_layers, cfg.n_kv_heads, cfg.head_dim
  slots, P_, S, width, T = sh["B"], sh["P"], sh["S"], sh["W"], sh["T"]
  rep = NamedSharding(mesh, P())
  out: list[Compiled] = []
  if P_:
    tok = jax.ShapeDtypeStruct((1, P_), jnp.int32, sharding=rep)
    out.append(_compile("generate prefix", lambda: _lowered(
        mesh, slots_lib.prefill_prefix, graphdef, state, None, tok, tok))[0])
  key = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), slots))
  a = functools.partial(_abstract, mesh)
  cache = cache_lib.SlotCache(
      k=a((L, slots, K, S, H), dtype, cache_lib.CACHE_AXES),
      v=a((L, slots, K, S, H), dtype, cache_lib.CACHE_AXES),
      length=a((slots,), jnp.int32, ("batch",)),
      prefix_k=a((L, K, P_, H), dtype, cache_lib.PREFIX_AXES),
      prefix_v=a((L, K, P_, H), dtype, cache_lib.PREFIX_AXES),
      prefix_ok=jax.ShapeDtypeStruct((P_,), jnp.bool_, sharding=rep),
      prefix_len=jax.ShapeDtypeStruct((), jnp.int32, sharding=rep))
  rows = lambda *shape_dtype: a(shape_dtype[:-1], shape_dtype[-1], ("batch",) + (None,) * (
      len(shape_dtype) - 2))
  st = dict(cache=cache, hist=rows(slots, S, jnp.int32),
            out=dict(tokens=rows(slots, width, jnp.int32),
                     logprobs=rows(slots, width, jnp.float32),
                     top_lp=rows(slots, width, top_n, jnp.float32),
                     top_ids=rows(slots, width, top_n, jnp.int32)),
            pending=rows(slots, jnp.int32), n_out=rows(slots, jnp.int32),
            done=rows(slots, jnp.bool_), keys=rows(slots, key.dtype))
  static = dict(sampling_=sampling.Sampling(), top_n=top_n, want_lp=True, eos=(2,),
                max_new=max_new)
  out.append(_compile("generate insert", lambda: _lowered(
      mesh, slots_lib.insert_prompts, graphdef, state, None, st, rows(slots, T, jnp.int32),
      rows(slots, jnp.int32), rows(slots, jnp.int32), rows(slots, key.dtype), **static))[0])
  scalar = jax.ShapeDtypeStruct((), jnp.int32, sharding=rep)
  out.append(_compile("generate steps", lambda: _lowered(
      mesh, slots_lib.decode_steps, graphdef, state, None, st, scalar, scalar, k=k, ngram=3,
      pad_id=0, **static))[0])
  return out


def _lowered(mesh, fn, *args, **kw):
  with sharding.use_mesh(mesh):
    return fn.lower(*args, **kw)


def score_step(cfg, rows: int, T: int, mesh, slots: int = 4) -> Compiled:
  """The scorer's `_score` on one packed batch of `rows` x `T` tokens."""
  from brd_jax.inference import scoring
  graphdef, state = _model_state(cfg, mesh)
  bt = jax.ShapeDtypeStruct((rows, T), jnp.int32, sharding=_rows_spec(mesh, "length"))
  bc = jax.ShapeDtypeStruct((rows, slots), jnp.int32, sharding=_rows_spec(mesh, None))
  valid = jax.ShapeDtypeStruct((rows, slots), jnp.bool_, sharding=_rows_spec(mesh, None))

  def lower():
    with sharding.use_mesh(mesh):
      return scoring._score.lower(graphdef, state, bt, bt, bt, bt, bc, bc, valid)  # pylint: disable=protected-access
  return _compile("eval score", lower)[0]
