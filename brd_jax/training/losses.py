"""Next-token cross-entropy (with optional z-loss) and forward KL to a teacher's top-k."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def token_nll(logits_BTV, targets_BT):
  """(-log p(target), log Z) per position, in fp32."""
  logits = logits_BTV.astype(jnp.float32)
  logz_BT = jax.nn.logsumexp(logits, axis=-1)
  tgt_BT = jnp.take_along_axis(logits, targets_BT[..., None], axis=-1)[..., 0]
  return logz_BT - tgt_BT, logz_BT


def kd_forward_kl(logits_BTV, topk_ids_BTK, topk_logprobs_BTK):
  """KL(teacher || student) per position over the teacher's top-k (renormalised) support."""
  logp_s = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
  logp_s_k = jnp.take_along_axis(logp_s, topk_ids_BTK, axis=-1)
  logp_t = jax.nn.log_softmax(topk_logprobs_BTK.astype(jnp.float32), axis=-1)
  return jnp.sum(jnp.exp(logp_t) * (logp_t - logp_s_k), axis=-1)


def per_segment_mean(values_BT, weights_BT, segment_ids_BT, max_segments: int):
  """Mean of values over each packed segment: (B, max_segments) means and counts (ids 1..n)."""
  seg = jax.nn.one_hot(segment_ids_BT, max_segments + 1, dtype=jnp.float32)[..., 1:]  # B,T,S
  w = weights_BT.astype(jnp.float32)[..., None] * seg
  total = jnp.sum(w * values_BT[..., None], axis=1)
  count = jnp.sum(w, axis=1)
  return total / jnp.maximum(count, 1.0), count
