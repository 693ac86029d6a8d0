"""Log-likelihood of continuations given contexts (lm-eval's `loglikelihood` request).

Tokenisation follows lm-eval: context and continuation are encoded together and split at the
context's token count; trailing context spaces move to the continuation; an empty context is
replaced by the prefix token (BOS, else EOS). Requests are sorted by length, bucketed to powers
of two and scored in jitted batches under a token budget (optionally sharded over the mesh).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from brd_jax import sharding
from brd_jax.inference.engine import bucket

COMPILES = {"score": 0}


@dataclasses.dataclass
class LogLik:
  loglik: float
  n_tokens: int
  is_greedy: bool


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
  n_spaces = len(context) - len(context.rstrip())
  if n_spaces:
    continuation = context[-n_spaces:] + continuation
    context = context[:-n_spaces]
  whole = tokenizer.encode(context + continuation, add_bos=False)
  ctx = tokenizer.encode(context, add_bos=False)
  return ctx, whole[len(ctx):]


@functools.partial(jax.jit, static_argnums=(0,))
def _score(graphdef, state, tokens_BT, targets_BT, seg_BT, score_BT):
  COMPILES["score"] += 1  # trace time only
  model = nnx.merge(graphdef, state)
  logits, _ = model(tokens_BT, segment_ids_BT=seg_BT)
  lse = jax.nn.logsumexp(logits, -1)
  tgt = jnp.take_along_axis(logits, targets_BT[..., None], -1)[..., 0]
  lp = jnp.where(score_BT, tgt - lse, 0.0)
  greedy = jnp.where(score_BT, jnp.argmax(logits, -1) == targets_BT, True)
  return lp.sum(-1), jnp.all(greedy, -1)


class Scorer:
  """Scores (context ids, continuation ids) pairs with one model."""

  def __init__(self, model, tokenizer=None, mesh=None, max_len: int | None = None,
               token_budget: int = 4096):
    self.model, self.tokenizer, self.mesh = model, tokenizer, mesh
    self.max_len = max_len or model.cfg.max_len
    self.token_budget = token_budget
    self._graphdef, self._state = nnx.split(model)
    self._rows = 1
    if mesh is not None:
      spec = sharding.logical_to_spec(("batch",), mesh=mesh)[0]
      axes = (spec,) if isinstance(spec, str) else (spec or ())
      self._rows = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1

  def prefix_id(self) -> int:
    tok = self.tokenizer
    for i in (getattr(tok, "bos_id", None), getattr(tok, "eos_id", None), self.model.cfg.bos_id,
              self.model.cfg.eos_id):
      if i is not None:
        return int(i)
    return 0

  def loglik(self, requests: Sequence[tuple[str, str]], progress=None) -> list[LogLik]:
    pairs = []
    for ctx, cont in requests:
      c, k = encode_pair(self.tokenizer, ctx, cont) if ctx else (
          [self.prefix_id()], self.tokenizer.encode(cont, add_bos=False))
      pairs.append((c or [self.prefix_id()], k))
    return self.loglik_ids(pairs, progress)

  def loglik_ids(self, pairs: Sequence[tuple[list[int], list[int]]], progress=None) -> list[LogLik]:
    rows = []
    for ctx, cont in pairs:
      if not cont:
        raise ValueError("empty continuation")
      whole = (list(ctx) + list(cont))[-(self.max_len + 1):]
      rows.append((whole[:-1], whole[1:], min(len(cont), len(whole) - 1)))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    out: list[LogLik | None] = [None] * len(rows)
    i = 0
    while i < len(order):
      T = bucket(len(rows[order[i]][0]), 16)
      B = max(self._rows, self.token_budget // T // self._rows * self._rows)
      idx = order[i:i + B]
      batch = max(self._rows, 1)
      while batch < len(idx):
        batch *= 2
      batch = min(batch, B)
      tokens = np.zeros((batch, T), np.int32)
      targets = np.zeros((batch, T), np.int32)
      seg = np.zeros((batch, T), np.int32)
      score = np.zeros((batch, T), bool)
      for r, j in enumerate(idx):
        inp, tgt, n = rows[j]
        tokens[r, :len(inp)], targets[r, :len(tgt)], seg[r, :len(inp)] = inp, tgt, 1
        score[r, len(inp) - n:len(inp)] = True
      seg[len(idx):, 0] = 1
      lp, greedy = _score(self._graphdef, self._state, *map(self._place, (tokens, targets, seg,
                                                                           score)))
      lp, greedy = np.asarray(lp), np.asarray(greedy)
      for r, j in enumerate(idx):
        out[j] = LogLik(float(lp[r]), rows[j][2], bool(greedy[r]))
      i += len(idx)
      if progress is not None:
        progress(len(idx))
    return out

  def _place(self, arr):
    if self.mesh is None:
      return jnp.asarray(arr)
    with sharding.use_mesh(self.mesh):
      return jax.device_put(arr, sharding.named_sharding(self.mesh, ("batch", "length")))
