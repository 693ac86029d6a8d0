"""Continuous batching for the teacher's reading: a fixed number of decode slots, refilled from
the queue as rows finish, after a prefix shared by every prompt, with prompt-lookup drafts.

The three switches (none changes a greedy output; under sampling each token keeps its exact
distribution):
- `continuous`: a finished row's slot is refilled (the newcomer is prefilled and joins the running
  decode) once `refill` slots are free, instead of every batch waiting for its longest row.
- `prefix_cache`: the prompts' longest common token prefix (a behaviour's few-shot preamble) is
  prefilled once; its keys/values are attended by every slot from one copy. Only each unit's own
  tokens are prefilled.
- `speculate` (k): each step verifies the row's newest token plus up to k drafted ones
  (`speculate.draft`) in one forward pass.

Device state lives in one pytree; the host loop inserts (`insert_prompts`), runs decode chunks
(`decode_steps`: a `while_loop` that returns as soon as enough slots are free) and harvests
finished rows. Programs are keyed by bucketed shapes (`slot_count`, `slot_shapes`), so a long
stream compiles a bounded number of them (`engine.COMPILES`); `brd plan` compiles and sizes these
very programs at these shapes.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from brd_jax import sharding
from brd_jax.inference import engine as plain
from brd_jax.inference import sampling, speculate
from brd_jax.models import layers
from brd_jax.models.cache import SlotCache

for _name in ("prefix", "insert", "step", "compact"):
  plain.COMPILES.setdefault(_name, 0)


def common_prefix(prompts: Sequence[Sequence[int]], minimum: int = 8) -> int:
  """Tokens shared by the start of every prompt, leaving each at least one of its own
  (0 when fewer than `minimum`: a prefix that short saves nothing)."""
  first = prompts[0]
  n = min(len(p) for p in prompts) - 1
  for p in prompts[1:]:
    m = 0
    while m < n and p[m] == first[m]:
      m += 1
    n = m
  return n if n >= minimum else 0


def slot_length(own_max: int, max_new: int, k: int) -> int:
  """Cache slots per row: the longest own prompt (to a power of two, so streams of similar
  sentences share programs), max_new tokens, the k drafts and the pending token; in blocks of 64.
  Every decode step reads all of them, so nothing beyond max_new is kept."""
  return -(-(plain.bucket(own_max, 16) + max_new + k + 1) // 64) * 64


def _insert_length(own_max: int) -> int:
  """An insertion's padded prompt length: its longest own prompt, in blocks of 16."""
  return -(-own_max // 16) * 16


def slot_count(max_batch: int, mesh) -> int:
  """Decode slots of a `SlotEngine(max_batch=...)` on `mesh` (None: one device)."""
  return plain.batch_bucket(max_batch, sharding.batch_multiple(mesh))


def slot_shapes(slots: int, preamble: int, own_max: int, max_new: int, k: int,
                min_prompt_bucket: int = 16) -> dict[str, int]:
  """The shapes `SlotEngine` gives its programs: B slots, the preamble's prefill bucket P (0: no
  preamble), cache length S per slot, output width W, and T, the padded prompt length of an
  insertion whose longest own prompt is own_max."""
  return {"P": plain.bucket(preamble, min_prompt_bucket) if preamble else 0,
          "S": slot_length(own_max, max_new, k), "W": max_new + k + 1,
          "T": _insert_length(own_max), "B": slots}


@functools.partial(jax.jit, static_argnums=(0,))
def prefill_prefix(graphdef, state, layers, tokens_1P, seg_1P):
  """The shared preamble's KV cache (batch 1, left-padded to P)."""
  plain.COMPILES["prefix"] += 1  # trace time only
  model = nnx.merge(graphdef, state)
  cache = model.init_cache(1, tokens_1P.shape[1])
  _, cache = model(tokens_1P, segment_ids_BT=seg_1P, cache=cache, return_hidden=True,
                   layer_params=layers)
  return cache


def _emit(st, rows_B, tokens_BT, count_B, stats, width: int):
  """Writes the first count_B tokens (and their log-probs) at each row's output cursor."""
  cols = jnp.where(jnp.arange(tokens_BT.shape[1])[None] < count_B[:, None],
                   st["n_out"][rows_B][:, None] + jnp.arange(tokens_BT.shape[1])[None], width)
  r = rows_B[:, None]
  out = st["out"]
  lp, top_lp, top_ids = stats
  return dict(tokens=out["tokens"].at[r, cols].set(tokens_BT, mode="drop"),
              logprobs=out["logprobs"].at[r, cols].set(lp, mode="drop"),
              top_lp=out["top_lp"].at[r, cols].set(top_lp, mode="drop"),
              top_ids=out["top_ids"].at[r, cols].set(top_ids, mode="drop"))


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=(
    "sampling_", "top_n", "want_lp", "eos", "max_new"), donate_argnames=("st",))
def insert_prompts(graphdef, state, layers, st, tokens_MT, lens_M, slots_M, keys_M, *, sampling_,
                   top_n, want_lp, eos, max_new):
  """Prefills M new prompts (right-padded) after the shared prefix into slots `slots_M`
  (index B = a filler row, dropped) and draws each one's first token."""
  plain.COMPILES["insert"] += 1
  model = nnx.merge(graphdef, state)
  big: SlotCache = st["cache"]
  M, T = tokens_MT.shape
  small = dataclasses.replace(SlotCache.zeros(model.cfg, M, T, big.k.dtype),
                              prefix_k=big.prefix_k, prefix_v=big.prefix_v,
                              prefix_ok=big.prefix_ok, prefix_len=big.prefix_len)
  hidden, small = model(tokens_MT, cache=small, return_hidden=True, layer_params=layers)
  last = jnp.take_along_axis(hidden, (lens_M - 1)[:, None, None], 1)           # M,1,D
  logits = model.logits(last)                                                    # M,1,V
  s = sampling_
  first = sampling.sample(logits[:, 0], keys_M, 0, s.temperature, s.top_k, s.top_p)
  stats = sampling.token_stats(logits, first[:, None], top_n, want_lp)
  put_kv = lambda c, x: c.at[:, slots_M, :, :T, :].set(x, mode="drop")
  cache = dataclasses.replace(big, k=put_kv(big.k, small.k), v=put_kv(big.v, small.v),
                              length=big.length.at[slots_M].set(lens_M, mode="drop"))
  width = st["out"]["tokens"].shape[1]
  hist = st["hist"].at[slots_M, :T].set(tokens_MT, mode="drop")
  hist = hist.at[slots_M, lens_M].set(first, mode="drop")
  fresh = dict(st, n_out=st["n_out"].at[slots_M].set(0, mode="drop"))
  fresh["out"] = {k: v.at[slots_M].set(jnp.zeros((), v.dtype), mode="drop")
                  for k, v in st["out"].items()}
  out = _emit(fresh, slots_M, first[:, None], jnp.ones((M,), jnp.int32), stats, width)
  done = jnp.isin(first, jnp.asarray(eos, jnp.int32)) | (max_new <= 1)
  return dict(cache=cache, hist=hist, out=out,
              pending=st["pending"].at[slots_M].set(first, mode="drop"),
              n_out=st["n_out"].at[slots_M].set(1, mode="drop"),
              done=st["done"].at[slots_M].set(done, mode="drop"),
              keys=st["keys"].at[slots_M].set(keys_M, mode="drop"))


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=(
    "sampling_", "top_n", "want_lp", "eos", "max_new", "k", "ngram", "pad_id"),
    donate_argnames=("st",))
def decode_steps(graphdef, state, layers, st, n_steps, need_done, *, sampling_, top_n, want_lp,
                 eos, max_new, k, ngram, pad_id):
  """Up to n_steps decode (verify) steps; returns early once need_done slots are done."""
  plain.COMPILES["step"] += 1
  model = nnx.merge(graphdef, state)
  eos_arr = jnp.asarray(eos, jnp.int32)
  s = sampling_
  B = st["done"].shape[0]
  rows = jnp.arange(B)
  width = st["out"]["tokens"].shape[1]

  def cond(c):
    i, st, _, _ = c
    return (i < n_steps) & (jnp.sum(st["done"]) < need_done)

  def body(c):
    i, st, accepted, drafted = c
    cache: SlotCache = st["cache"]
    if k:
      drafts, valid = speculate.draft(st["hist"], cache.length, k, ngram)
    else:
      drafts, valid = jnp.zeros((B, 0), jnp.int32), jnp.zeros((B, 0), bool)
    inp = jnp.concatenate([st["pending"][:, None], jnp.where(valid, drafts, pad_id)], 1)
    logits, cache = model(inp, cache=cache, layer_params=layers)
    tokens, count = speculate.verify(logits, drafts, valid, st["keys"], st["n_out"],
                                     s.temperature, s.top_k, s.top_p)
    T = tokens.shape[1]
    j = jnp.arange(T)[None]
    hit = jnp.isin(tokens, eos_arr) & (j < count[:, None])
    ended = jnp.any(hit, 1)
    count = jnp.where(ended, jnp.argmax(hit, 1) + 1, count)
    count = jnp.minimum(count, max_new - st["n_out"])
    count = jnp.where(st["done"], 0, count)
    stats = sampling.token_stats(logits, tokens, top_n, want_lp)
    out = _emit(st, rows, tokens, count, stats, width)
    hist_cols = jnp.where(j < count[:, None], cache.length[:, None] + 1 + j, st["hist"].shape[1])
    hist = st["hist"].at[rows[:, None], hist_cols].set(tokens, mode="drop")
    n_out = st["n_out"] + count
    newest = jnp.take_along_axis(tokens, jnp.maximum(count - 1, 0)[:, None], 1)[:, 0]
    cache = dataclasses.replace(cache, length=cache.length + count)
    done = st["done"] | (ended & (count > 0)) | (n_out >= max_new)
    live = ~st["done"]
    accepted += jnp.sum(jnp.maximum(count - 1, 0))
    drafted += jnp.sum(valid & live[:, None])
    return i + 1, dict(cache=cache, hist=hist, out=out,
                       pending=jnp.where(count > 0, newest, st["pending"]), n_out=n_out,
                       done=done, keys=st["keys"]), accepted, drafted

  zero = jnp.zeros((), jnp.int32)
  i, st, accepted, drafted = jax.lax.while_loop(cond, body, (zero, st, zero, zero))
  return st, (i, accepted, drafted)


@jax.jit
def _compact(st, rows_R):
  """The state of slots rows_R only (the batch shrinks as the queue runs dry)."""
  plain.COMPILES["compact"] += 1
  take = lambda x, axis=0: jnp.take(x, rows_R, axis=axis)
  c: SlotCache = st["cache"]
  cache = dataclasses.replace(c, k=take(c.k, 1), v=take(c.v, 1), length=take(c.length))
  rest = jax.tree.map(take, {k: v for k, v in st.items() if k != "cache"})
  return dict(rest, cache=cache)


class SlotEngine(plain.Engine):
  """`Engine` with continuous batching, a shared-prefix cache and prompt-lookup speculation.

  max_batch: decode slots. refill: free slots that trigger a refill (0: a quarter of the slots).
  """

  def __init__(self, model, tokenizer=None, mesh=None, max_batch: int = 32, chunk: int = 32,
               split_layers: bool | None = None, continuous: bool = True,
               prefix_cache: bool = True, speculate_k: int = 4, ngram: int = 3, refill: int = 0,
               min_prompt_bucket: int = 16):
    super().__init__(model, tokenizer, mesh, max_batch, min_prompt_bucket, chunk, split_layers)
    self.continuous, self.prefix_cache = continuous, prefix_cache
    self.k, self.ngram = int(speculate_k), int(ngram)
    self.slots = slot_count(max_batch, mesh)
    self.refill = refill or max(1, self.slots // 4)
    self.stats = collections.Counter()   # decode steps, host loops, prompts inserted

  def generate(self, prompts, max_new_tokens=64, sampling_=sampling.Sampling(), keys=None,
               seed=0, eos_ids=None, stop=(), top_logprobs=0, return_logprobs=False):
    out = dict(self.stream(prompts, max_new_tokens, sampling_, keys, seed, eos_ids, stop,
                           top_logprobs, return_logprobs))
    return [out[i] for i in range(len(prompts))]

  def stream(self, prompts, max_new_tokens=64, sampling_=sampling.Sampling(), keys=None, seed=0,
             eos_ids=None, stop=(), top_logprobs=0, return_logprobs=False):
    """Yields (prompt index, Generation) as rows finish."""
    n = len(prompts)
    if n == 0:
      return
    if any(len(p) == 0 for p in prompts):
      raise ValueError("SlotEngine: every prompt needs at least one token")
    if keys is None:
      keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(n))
    pad_id, eos = self._pad_id(), self._eos(eos_ids)
    n_pre = common_prefix(prompts) if self.prefix_cache else 0
    own = [list(p[n_pre:]) for p in prompts]
    self.stats["prefix_tokens"] = n_pre
    sh = slot_shapes(self.slots, n_pre, max(len(o) for o in own), max_new_tokens, self.k,
                     self.min_prompt_bucket)
    static = dict(sampling_=sampling_, top_n=top_logprobs,
                  want_lp=bool(return_logprobs or top_logprobs), eos=eos, max_new=max_new_tokens)
    ctx = sharding.use_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()
    with ctx:
      st = self._init_state(prompts[0][:n_pre], sh, top_logprobs, keys[:1])
      yield from self._loop(st, own, keys, n, max_new_tokens, static, stop, pad_id)

  def _init_state(self, prefix, sh, top_n, key1):
    cfg, B, S, width, P = self.model.cfg, sh["B"], sh["S"], sh["W"], sh["P"]
    pre = None
    if prefix:
      tokens = np.zeros((1, P), np.int32)
      seg = np.zeros((1, P), np.int32)
      tokens[0, P - len(prefix):] = prefix
      seg[0, P - len(prefix):] = 1
      pre = prefill_prefix(self._graphdef, self._state, self._layers, jnp.asarray(tokens),
                           jnp.asarray(seg))
    cache = SlotCache.zeros(cfg, B, S, jnp.dtype(layers.cache_dtype(cfg)), pre)
    rep = lambda shape, dt: self._place_rows(np.zeros(shape, dt))
    return dict(cache=cache, hist=rep((B, S), np.int32),
                out=dict(tokens=rep((B, width), np.int32), logprobs=rep((B, width), np.float32),
                         top_lp=rep((B, width, top_n), np.float32),
                         top_ids=rep((B, width, top_n), np.int32)),
                pending=rep((B,), np.int32), n_out=rep((B,), np.int32),
                done=self._place_rows(np.ones((B,), bool)),
                keys=jnp.concatenate([key1] * B))

  def _place_rows(self, arr):
    if self.mesh is None:
      return jnp.asarray(arr)
    names = ("batch",) + (None,) * (arr.ndim - 1)
    return jax.device_put(arr, sharding.named_sharding(self.mesh, names))

  def _loop(self, st, own, keys, n, max_new, static, stop, pad_id):
    B = self.slots
    # Longest first off the end of the list = shortest first: a refill group then pads little.
    queue = sorted(range(n), key=lambda i: (len(own[i]), i))[::-1]
    free = list(range(B))
    active: dict[int, int] = {}   # slot -> prompt index
    stopped: set[int] = set()
    row = functools.partial(self._row, max_new=max_new, eos=set(static["eos"]), stop=stop,
                            top_n=static["top_n"], return_logprobs=static["want_lp"])
    while queue or active:
      if queue and (len(free) >= min(self.refill, len(queue)) if self.continuous
                    else not active):
        take = [queue.pop() for _ in range(min(len(free), len(queue)))]
        slots = [free.pop(0) for _ in take]
        st = self._insert(st, [own[i] for i in take], slots, keys[np.asarray(take)], static)
        self.stats["inserted"] += len(take)
        self.stats["refills"] += bool(active)
        active.update(zip(slots, take))
      elif self.continuous and not queue and active:
        st, B, active, stopped = self._shrink(st, B, active, stopped)
        free = [r for r in range(B) if r not in active]
      if self.continuous and queue:
        need = (B - len(active)) + min(self.refill, len(queue))   # enough free slots to refill
      elif self.continuous and len(active) > B // 2 >= max(self._row_multiple, 1):
        need = B - B // 2                                            # few enough rows to shrink
      else:
        need = B
      st, steps = decode_steps(self._graphdef, self._state, self._layers, st,
                               jnp.int32(self.chunk), jnp.int32(need), k=self.k, ngram=self.ngram,
                               pad_id=pad_id, **static)
      done = np.asarray(st["done"])
      steps, accepted, drafted = (int(x) for x in jax.device_get(steps))
      self.stats["steps"] += steps
      self.stats["row_steps"] += steps * B
      self.stats["accepted"] += accepted
      self.stats["drafted"] += drafted
      self.stats["loops"] += 1
      if stop:
        done = self._check_stops(st, done, active, stop, stopped)
        st["done"] = self._place_rows(done)
      finished = [s for s in active if done[s]]
      if finished:
        host = jax.device_get(st["out"])
        for s in finished:
          i = active.pop(s)
          free.append(s)
          yield i, row(host, s, s in stopped)
          stopped.discard(s)
        free.sort()

  def _shrink(self, st, B, active, stopped):
    """Once nothing is queued, the decode batch halves while half the slots would do."""
    R = B
    while R // 2 >= max(len(active), self._row_multiple, 1) and R // 2 >= 1:
      R //= 2
    if R == B:
      return st, B, active, stopped
    keep = sorted(active)
    rows = keep + [s for s in range(B) if s not in active][:R - len(keep)]
    st = _compact(st, jnp.asarray(rows, np.int32))
    where = {old: new for new, old in enumerate(rows)}
    self.stats["shrinks"] += 1
    return (st, R, {where[s]: i for s, i in active.items()},
            {where[s] for s in stopped if s in where})

  def _check_stops(self, st, done, active, stop, stopped):
    done = done.copy()
    toks, n_out = np.asarray(st["out"]["tokens"]), np.asarray(st["n_out"])
    for s in active:
      if not done[s] and self._hits_stop(toks[s, :n_out[s]], stop):
        done[s] = True
        stopped.add(s)
    return done

  def _insert(self, st, own, slots, keys, static):
    """Inserts prompts in groups of a power-of-two size (fewer programs to compile)."""
    while own:
      M = 1
      while M * 2 <= len(own):
        M *= 2
      M = max(M, self._row_multiple)
      group, own = own[:M], own[M:]
      gslots, slots = slots[:M], slots[M:]
      gkeys, keys = keys[:len(group)], keys[len(group):]
      T = _insert_length(max(len(o) for o in group))
      tokens = np.zeros((M, T), np.int32)
      lens = np.ones((M,), np.int32)
      for r, o in enumerate(group):
        tokens[r, :len(o)] = o
        lens[r] = len(o)
      slot_ids = np.full((M,), self.slots, np.int32)
      slot_ids[:len(gslots)] = gslots
      if M > len(group):
        gkeys = jnp.concatenate([gkeys, jnp.stack([jax.random.key(0)] * (M - len(group)))])
      st = insert_prompts(self._graphdef, self._state, self._layers, st, self._place_rows(tokens),
                          self._place_rows(lens), self._place_rows(slot_ids), gkeys, **static)
    return st
