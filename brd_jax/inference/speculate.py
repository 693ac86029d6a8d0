"""Copy-aware speculative decoding (prompt lookup): drafts from the row's own tokens, verified
in one forward pass of the target model.

A NER line copies an entity from the sentence, a QRA question copies most of the sentence: the
last few generated tokens usually occurred before in the row, and what followed them there is a
good guess for what comes next. Nothing but the target model decides what is kept:
- greedy: the longest draft prefix equal to the model's argmax is kept, plus the model's own next
  token, so the output is token for token that of plain greedy decoding;
- sampling: a draft token d (proposed with certainty) is kept with probability p(d) and a rejection
  resamples from p without d (the speculative-sampling rule with a one-point draft), so every
  output token is distributed exactly as under plain sampling.
Every random draw of output position i comes from the row's key folded with i, as in plain
decoding, so a row's output does not depend on its batch or on where a verify step began.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from brd_jax.inference import sampling


def draft(hist_BS, last_B, k: int, max_ngram: int):
  """(drafts_BK, valid_BK): up to k tokens that followed the latest earlier occurrence of the
  longest (<= max_ngram) n-gram ending at each row's slot `last` (its newest token)."""
  B, S = hist_BS.shape
  slots = jnp.arange(S)
  best = jnp.full((B,), -1, jnp.int32)
  for n in range(max_ngram, 0, -1):
    match = (slots[None] >= n - 1) & (slots[None] < last_B[:, None]) & (last_B[:, None] >= n - 1)
    for m in range(n):
      gram = jnp.take_along_axis(hist_BS, jnp.maximum(last_B - (n - 1) + m, 0)[:, None], 1)
      match &= jnp.roll(hist_BS, (n - 1) - m, axis=1) == gram   # [j] = hist[j - (n-1) + m]
    j = jnp.max(jnp.where(match, slots[None], -1), axis=1).astype(jnp.int32)
    best = jnp.where(best < 0, j, best)
  idx = best[:, None] + 1 + jnp.arange(k)[None]
  valid = (best[:, None] >= 0) & (idx <= last_B[:, None])
  drafts = jnp.take_along_axis(hist_BS, jnp.clip(idx, 0, S - 1), 1)
  return jnp.where(valid, drafts, -1), valid


def verify(logits_BTV, drafts_BK, valid_BK, keys_B, pos_B, temperature: float, top_k: int,
           top_p: float):
  """(tokens_BT, count_B): output tokens for the T = K+1 verified positions, of which the first
  `count` (accepted drafts + one token of the model's own) are kept."""
  B, T, V = logits_BTV.shape
  K = T - 1
  drafts_BT = jnp.concatenate([drafts_BK, jnp.full((B, 1), -1, drafts_BK.dtype)], 1)
  valid_BT = jnp.concatenate([valid_BK, jnp.zeros((B, 1), bool)], 1)
  if temperature == 0.0:
    tokens = jnp.argmax(logits_BTV, -1).astype(jnp.int32)
    agree = valid_BT[:, :K] & (drafts_BK == tokens[:, :K])
    return tokens, 1 + jnp.sum(jnp.cumprod(agree, axis=1), axis=1).astype(jnp.int32)
  logits = sampling.filter_logits(
      logits_BTV.reshape(B * T, V).astype(jnp.float32) / temperature, top_k, top_p).reshape(B, T, V)
  step_keys = jax.vmap(lambda key, p: jax.vmap(lambda i: jax.random.fold_in(key, p + i))(
      jnp.arange(T)))(keys_B, pos_B)                                            # B,T
  logp = jax.nn.log_softmax(logits, -1)
  p_draft = jnp.exp(jnp.take_along_axis(logp, jnp.maximum(drafts_BT, 0)[..., None], -1)[..., 0])
  u = jax.vmap(jax.vmap(lambda key: jax.random.uniform(jax.random.fold_in(key, 1))))(step_keys)
  agree = valid_BT & (u < p_draft)
  accepted = jnp.sum(jnp.cumprod(agree[:, :K], axis=1), axis=1).astype(jnp.int32)
  # Where a draft was rejected, draw from p with the draft removed (p renormalised over the rest).
  rejected = jax.nn.one_hot(jnp.maximum(drafts_BT, 0), V, dtype=bool) & valid_BT[..., None]
  residual = jnp.where(rejected, -jnp.inf, logits)
  drawn = jax.vmap(jax.vmap(jax.random.categorical))(step_keys, residual).astype(jnp.int32)
  tokens = jnp.where(jnp.arange(T)[None] < accepted[:, None], drafts_BT, drawn)
  return tokens, accepted + 1
