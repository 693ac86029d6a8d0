"""Batched generation: left-padded prefill, then a jitted `lax.while_loop` of one-token steps
over a pre-allocated KV cache, stopping when every row has emitted an end token."""
from __future__ import annotations

import functools
import logging
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from brd_jax.inference import sampling

COMPILES = {"generate": 0}


def bucket(n: int, minimum: int = 16) -> int:
  """Rounds lengths up to a power of two so a long run compiles few programs."""
  b = minimum
  while b < n:
    b *= 2
  return b


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=(
    "max_new", "eos", "temperature", "top_k", "top_p", "pad_id"))
def _run(graphdef, state, tokens_BP, seg_BP, keys_B, *, max_new, eos, temperature, top_k, top_p,
         pad_id):
  COMPILES["generate"] += 1  # runs at trace time only: counts compilations
  model = nnx.merge(graphdef, state)
  B, P = tokens_BP.shape
  cache = model.init_cache(B, P + max_new)
  logits, cache = model(tokens_BP, segment_ids_BT=seg_BP, cache=cache)
  eos_arr = jnp.asarray(eos, jnp.int32)
  first = sampling.sample(logits[:, -1], keys_B, 0, temperature, top_k, top_p)
  out = jnp.full((B, max_new), pad_id, jnp.int32).at[:, 0].set(first)
  done = jnp.isin(first, eos_arr)

  def cond(c):
    i, _, _, done, _ = c
    return (i < max_new) & ~jnp.all(done)

  def body(c):
    i, cache, out, done, last = c
    logits, cache = model(last[:, None], segment_ids_BT=jnp.ones((B, 1), jnp.int32), cache=cache)
    nxt = sampling.sample(logits[:, 0], keys_B, i, temperature, top_k, top_p)
    nxt = jnp.where(done, pad_id, nxt)
    return i + 1, cache, out.at[:, i].set(nxt), done | jnp.isin(nxt, eos_arr), nxt

  _, _, out, _, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), cache, out, done, first))
  return out


def generate(model, prompts: Sequence[Sequence[int]], max_new_tokens: int = 32,
             eos_ids: Sequence[int] = (), temperature: float = 0.0, top_k: int = 0,
             top_p: float = 1.0, seed: int = 0, pad_id: int = 0,
             keys=None) -> list[list[int]]:
  """Generated ids per prompt (without the end token). Prompts are left-padded to a bucket."""
  if not prompts:
    return []
  B = len(prompts)
  P = bucket(max(len(p) for p in prompts))
  tokens = np.full((B, P), pad_id, np.int32)
  seg = np.zeros((B, P), np.int32)
  for i, p in enumerate(prompts):
    if len(p):
      tokens[i, P - len(p):] = p
      seg[i, P - len(p):] = 1
  if keys is None:
    keys = jax.random.split(jax.random.key(seed), B)
  graphdef, state = nnx.split(model)
  before = COMPILES["generate"]
  out = _run(graphdef, state, jnp.asarray(tokens), jnp.asarray(seg), keys,
             max_new=int(max_new_tokens), eos=tuple(int(e) for e in eos_ids),
             temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
             pad_id=int(pad_id))
  if COMPILES["generate"] != before:
    logging.info("compiled generate for batch %d, prompt bucket %d, %d new tokens", B, P,
                 max_new_tokens)
  result = []
  eos = set(int(e) for e in eos_ids)
  for row in np.asarray(out):
    ids = []
    for t in row.tolist():
      if t in eos:
        break
      ids.append(t)
    result.append(ids)
  return result
