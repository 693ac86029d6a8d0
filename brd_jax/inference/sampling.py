"""Token samplers. Each row has its own key, folded with the step, so a row's draw does not
depend on the batch it is in."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How `sample` draws (the defaults: greedy)."""
  temperature: float = 0.0   # 0 = greedy
  top_k: int = 0             # 0 = off
  top_p: float = 1.0         # 1 = off


def filter_logits(logits_BV, top_k: int = 0, top_p: float = 1.0):
  """Sets logits outside the top-k / nucleus (top-p) set to -inf."""
  neg = jnp.finfo(logits_BV.dtype).min
  if top_k and top_k > 0:
    kth = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
    logits_BV = jnp.where(logits_BV < kth, neg, logits_BV)
  if top_p < 1.0:
    order = jnp.argsort(-logits_BV, axis=-1)
    sorted_logits = jnp.take_along_axis(logits_BV, order, -1)
    probs = jax.nn.softmax(sorted_logits, -1)
    before = jnp.cumsum(probs, -1) - probs  # mass strictly above each token
    keep_sorted = before < top_p            # the top token is always kept
    keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits_BV.shape[0])[:, None], order].set(
        keep_sorted)
    logits_BV = jnp.where(keep, logits_BV, neg)
  return logits_BV


def sample(logits_BV, keys_B, step, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0):
  """Greedy when temperature == 0, else a draw from softmax(filtered logits / T)."""
  if temperature == 0.0:
    return jnp.argmax(logits_BV, -1).astype(jnp.int32)
  logits = filter_logits(logits_BV.astype(jnp.float32) / temperature, top_k, top_p)
  step_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(keys_B)
  return jax.vmap(jax.random.categorical)(step_keys, logits).astype(jnp.int32)


def token_stats(logits_XV, tokens_X, top_n: int, want: bool = True):
  """(log p(token), the top_n log-probs, their ids) under the model at temperature 1, shaped X,
  X+(top_n,), X+(top_n,) for any leading shape X (B, or B,T); zeros when not `want` (and no top
  entries: they are read only with log-probs)."""
  lead, V = tokens_X.shape, logits_XV.shape[-1]
  logits_RV, tokens_R = logits_XV.reshape(-1, V), tokens_X.reshape(-1)
  R = tokens_R.shape[0]
  top_lp, top_ids = jnp.zeros((R, 0), jnp.float32), jnp.zeros((R, 0), jnp.int32)
  if not want:
    chosen = jnp.zeros((R,), jnp.float32)
  else:
    lp = jax.nn.log_softmax(logits_RV.astype(jnp.float32), -1)
    chosen = jnp.take_along_axis(lp, tokens_R[:, None], -1)[:, 0]
    if top_n:
      top_lp, top_ids = jax.lax.top_k(lp, top_n)
  width = (top_lp.shape[-1],)
  return (chosen.reshape(lead), top_lp.reshape(lead + width),
          top_ids.astype(jnp.int32).reshape(lead + width))
