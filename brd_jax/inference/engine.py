"""Batched generation: left-padded prefill, then jitted `lax.while_loop` decode chunks over a
pre-allocated, sharded KV cache.

Shapes are bucketed (batch: `batch_bucket`; prompt length, new tokens: `bucket`) so a long run
compiles a bounded number of programs; `COMPILES` counts them. Stop strings are checked on the
host between decode chunks.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from brd_jax import sharding
from brd_jax.inference import sampling
from brd_jax.inference.sampling import Sampling

COMPILES: dict[str, int] = {"prefill": 0, "decode": 0}


@dataclasses.dataclass
class Generation:
  tokens: list[int]
  finish_reason: str                     # "eos" | "stop" | "length"
  text: str | None = None
  logprobs: list[float] | None = None    # log p(token) under the model (temperature 1)
  top_logprobs: list[list[tuple[int, float]]] | None = None


def bucket(n: int, minimum: int = 16) -> int:
  """Next power of two >= n (>= minimum)."""
  b = minimum
  while b < n:
    b *= 2
  return b


def batch_bucket(n: int, multiple: int) -> int:
  """Rows a batch of n prompts is padded to: the least power-of-two multiple of `multiple` (the
  mesh's batch shards, `sharding.batch_multiple`) that holds n."""
  b = max(multiple, 1)
  while b < n:
    b *= 2
  return b


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=(
    "max_new", "sampling_", "top_n", "want_lp", "pad_id", "eos"))
def _prefill(graphdef, state, layers, tokens_BP, seg_BP, keys_B, *, max_new, sampling_, top_n,
             want_lp, pad_id, eos):
  COMPILES["prefill"] += 1  # trace time only
  model = nnx.merge(graphdef, state)
  B, P = tokens_BP.shape
  cache = model.init_cache(B, P + max_new)
  hidden, cache = model(tokens_BP, segment_ids_BT=seg_BP, cache=cache, return_hidden=True,
                        layer_params=layers)
  logits = model.logits(hidden[:, -1:])  # the vocab projection only where it is needed
  s = sampling_
  first = sampling.sample(logits[:, -1], keys_B, 0, s.temperature, s.top_k, s.top_p)
  lp, top_lp, top_ids = sampling.token_stats(logits[:, -1], first, top_n, want_lp)
  buf = dict(
      tokens=jnp.full((B, max_new), pad_id, jnp.int32).at[:, 0].set(first),
      logprobs=jnp.zeros((B, max_new), jnp.float32).at[:, 0].set(lp),
      top_lp=jnp.zeros((B, max_new, top_n), jnp.float32).at[:, 0].set(top_lp),
      top_ids=jnp.zeros((B, max_new, top_n), jnp.int32).at[:, 0].set(top_ids))
  done = jnp.isin(first, jnp.asarray(eos, jnp.int32))
  return cache, buf, done


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=(
    "sampling_", "top_n", "want_lp", "pad_id", "eos"), donate_argnames=("cache", "buf"))
def _decode(graphdef, state, layers, cache, buf, done, keys_B, start, stop, *, sampling_, top_n,
            want_lp, pad_id, eos):
  """Steps start..stop-1 (or until every row is done); returns the updated state."""
  COMPILES["decode"] += 1
  model = nnx.merge(graphdef, state)
  B = done.shape[0]
  eos_arr = jnp.asarray(eos, jnp.int32)
  s = sampling_

  def cond(c):
    i, _, _, done = c
    return (i < stop) & ~jnp.all(done)

  def body(c):
    i, cache, buf, done = c
    last = jnp.take_along_axis(buf["tokens"], (i - 1)[None, None].repeat(B, 0), 1)
    logits, cache = model(last, segment_ids_BT=jnp.ones((B, 1), jnp.int32), cache=cache,
                          layer_params=layers)
    nxt = sampling.sample(logits[:, 0], keys_B, i, s.temperature, s.top_k, s.top_p)
    nxt = jnp.where(done, pad_id, nxt)
    lp, top_lp, top_ids = sampling.token_stats(logits[:, 0], nxt, top_n, want_lp)
    buf = dict(tokens=buf["tokens"].at[:, i].set(nxt), logprobs=buf["logprobs"].at[:, i].set(lp),
               top_lp=buf["top_lp"].at[:, i].set(top_lp),
               top_ids=buf["top_ids"].at[:, i].set(top_ids))
    return i + 1, cache, buf, done | jnp.isin(nxt, eos_arr)

  _, cache, buf, done = jax.lax.while_loop(cond, body, (start, cache, buf, done))
  return cache, buf, done


class Engine:
  """Generates for batches of token-id prompts with one model (optionally sharded on `mesh`).

  split_layers (default: on the CPU backend) gives each layer its own weight buffers; see
  `Decoder.split_layers`.
  """

  def __init__(self, model, tokenizer=None, mesh=None, max_batch: int = 32,
               min_prompt_bucket: int = 16, chunk: int = 32, split_layers: bool | None = None):
    self.model, self.tokenizer, self.mesh = model, tokenizer, mesh
    self.max_batch, self.min_prompt_bucket, self.chunk = max_batch, min_prompt_bucket, chunk
    self._graphdef, self._state = nnx.split(model)
    if split_layers is None:
      split_layers = jax.default_backend() == "cpu"
    self._layers = model.split_layers() if split_layers else None
    self._row_multiple = sharding.batch_multiple(mesh)

  def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 64,
               sampling_: Sampling = Sampling(), keys=None, seed: int = 0,
               eos_ids: Sequence[int] | None = None, stop: Sequence[str] = (),
               top_logprobs: int = 0, return_logprobs: bool = False,
               cut_at_stop: bool = True) -> list[Generation]:
    """One Generation per prompt, in order. `keys`: one PRNG key per prompt (else from seed).
    `cut_at_stop=False`: a stopped row keeps every token decoded up to the check that saw the
    stop, so a caller can cut the text mid-token (lm-eval's rule) rather than at a token."""
    n = len(prompts)
    if keys is None:
      keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(n))
    out: list[Generation] = []
    for s in range(0, n, self.max_batch):
      batch = dict(self._batch_stream(prompts[s:s + self.max_batch], keys[s:s + self.max_batch],
                                      max_new_tokens, sampling_, eos_ids, stop, top_logprobs,
                                      return_logprobs, streaming=False, cut=cut_at_stop))
      out.extend(batch[i] for i in range(len(batch)))
    return out

  def stream(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 64,
             sampling_: Sampling = Sampling(), keys=None, seed: int = 0,
             eos_ids: Sequence[int] | None = None, stop: Sequence[str] = (),
             top_logprobs: int = 0, return_logprobs: bool = False):
    """Yields (prompt index, Generation) as rows finish (checked every `chunk` decode steps).

    The queue is ordered by prompt length (shortest first) so a batch pads little; a row's
    output depends only on its prompt and key, never on its batch.
    """
    n = len(prompts)
    if keys is None:
      keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(n))
    order = sorted(range(n), key=lambda i: (len(prompts[i]), i))
    for s in range(0, n, self.max_batch):
      idx = order[s:s + self.max_batch]
      sub_keys = keys[np.asarray(idx)]
      for j, g in self._batch_stream([prompts[i] for i in idx], sub_keys, max_new_tokens,
                                     sampling_, eos_ids, stop, top_logprobs, return_logprobs,
                                     streaming=True):
        yield idx[j], g

  def _eos(self, eos_ids):
    if eos_ids is not None:
      return tuple(sorted({int(e) for e in eos_ids}))
    ids = {self.model.cfg.eos_id}
    if self.tokenizer is not None:
      ids.add(self.tokenizer.eos_id)
    return tuple(sorted(i for i in ids if i is not None))

  def _pad_id(self) -> int:
    for pid in (getattr(self.tokenizer, "pad_id", None), self.model.cfg.pad_id, 0):
      if pid is not None:
        return int(pid)
    return 0

  def _batch_stream(self, prompts, keys, max_new_tokens, sampling_, eos_ids, stop, top_n,
                    return_logprobs, streaming, cut: bool = True):
    """Generates one batch; yields (row, Generation), each row once, when it is done."""
    n = len(prompts)
    B = batch_bucket(n, self._row_multiple)
    P = bucket(max(max(len(p) for p in prompts), 1), self.min_prompt_bucket)
    new = bucket(max_new_tokens, 8)
    pad_id, eos = self._pad_id(), self._eos(eos_ids)
    tokens = np.full((B, P), pad_id, np.int32)
    seg = np.zeros((B, P), np.int32)
    for i, p in enumerate(prompts):
      if len(p):
        tokens[i, P - len(p):] = p
        seg[i, P - len(p):] = 1
    if B > n:  # filler rows: one token each, already done
      tokens[n:, -1] = pad_id
      seg[n:, -1] = 1
      keys = jnp.concatenate([keys, jnp.stack([jax.random.key(0)] * (B - n))])
    tokens, seg = self._place(tokens), self._place(seg)
    static = dict(sampling_=sampling_, top_n=top_n, want_lp=bool(return_logprobs or top_n),
                  pad_id=pad_id, eos=eos)
    ctx = sharding.use_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()
    with ctx:
      cache, buf, done = _prefill(self._graphdef, self._state, self._layers, tokens, seg, keys,
                                  max_new=new, **static)
      host_done = np.asarray(done).copy()
      host_done[n:] = True
      done = jnp.asarray(host_done)
      stopped, stopped_at = np.zeros(B, bool), np.zeros(B, int)
      emitted = np.zeros(B, bool)
      emitted[n:] = True
      start = 1
      chunk = self.chunk if (stop or streaming) else max_new_tokens
      row = functools.partial(self._row, max_new=max_new_tokens, eos=set(eos),
                              stop=stop if cut else (), upto=None if cut else stopped_at,
                              top_n=top_n, return_logprobs=return_logprobs)
      while start < max_new_tokens and not host_done.all():
        if streaming and (host_done & ~emitted).any():
          host = jax.device_get(buf)
          for i in np.flatnonzero(host_done & ~emitted):
            emitted[i] = True
            yield int(i), row(host, int(i), stopped[i])
        end = min(start + chunk, max_new_tokens)
        cache, buf, done = _decode(self._graphdef, self._state, self._layers, cache, buf, done,
                                   keys, jnp.int32(start), jnp.int32(end), **static)
        start = end
        host_done = np.asarray(done).copy()
        if stop:
          toks = np.asarray(buf["tokens"])
          for i in range(n):
            if not host_done[i] and self._hits_stop(toks[i, :start], stop):
              host_done[i] = stopped[i] = True
              stopped_at[i] = start
          done = jnp.asarray(host_done)
    host = jax.device_get(buf)
    for i in np.flatnonzero(~emitted):
      yield int(i), row(host, int(i), stopped[i])

  def _place(self, arr):
    if self.mesh is None:
      return jnp.asarray(arr)
    return jax.device_put(arr, sharding.named_sharding(self.mesh, ("batch", "length")))

  def _hits_stop(self, ids, stop) -> bool:
    text = self.tokenizer.decode(ids)
    return any(s in text for s in stop)

  def _row(self, buf, i, stopped, *, max_new, eos, stop, top_n, return_logprobs,
           upto=None) -> Generation:
    """Row i of the host buffers; tokens, text and log-probs all end at the same place."""
    row = buf["tokens"][i, :max_new].tolist()
    if stopped and upto is not None:  # the tokens decoded before the stop was seen
      row = row[:upto[i]]
    end, reason = len(row), "length"
    for j, t in enumerate(row):
      if t in eos:
        end, reason = j, "eos"
        break
    if stopped:
      reason = "stop"
    g = Generation(tokens=row[:end], finish_reason=reason)
    if self.tokenizer is not None:
      g.text = self.tokenizer.decode(g.tokens, skip_special_tokens=True)
      cut = min((g.text.find(s) for s in stop if s in g.text), default=-1)
      if cut >= 0:
        end = self._tokens_before(g.tokens, g.text[:cut])
        g.tokens, g.finish_reason = g.tokens[:end], "stop"
        g.text = self.tokenizer.decode(g.tokens, skip_special_tokens=True)
    if return_logprobs:
      g.logprobs = buf["logprobs"][i, :end].tolist()
    if top_n:
      g.top_logprobs = [list(zip(buf["top_ids"][i, j].tolist(), buf["top_lp"][i, j].tolist()))
                        for j in range(end)]
    return g

  def _tokens_before(self, tokens, prefix: str) -> int:
    """The most tokens whose text is a prefix of `prefix` (a stop string may split a token)."""
    for m in range(len(tokens), -1, -1):
      if prefix.startswith(self.tokenizer.decode(tokens[:m], skip_special_tokens=True)):
        return m
    return 0


def generate(model, prompts, max_new_tokens=32, eos_ids=(), temperature=0.0, top_k=0, top_p=1.0,
             seed=0, tokenizer=None):
  """Convenience wrapper: token ids per prompt (end token excluded)."""
  eng = Engine(model, tokenizer)
  gens = eng.generate(prompts, max_new_tokens, Sampling(temperature, top_k, top_p), seed=seed,
                      eos_ids=eos_ids)
  logging.debug("compiles: %s", COMPILES)
  return [g.tokens for g in gens]
