"""AdamW with warmup + cosine / linear decay, global-norm clipping, no decay on norms and biases."""
from __future__ import annotations

import jax
import optax

from brd_jax.training.config import TrainConfig


def schedule(cfg: TrainConfig) -> optax.Schedule:
  peak, end = cfg.learning_rate, cfg.learning_rate * cfg.end_lr_ratio
  warm = optax.linear_schedule(0.0, peak, max(cfg.warmup_steps, 1))
  rest = max(cfg.steps - cfg.warmup_steps, 1)
  if cfg.decay == "cosine":
    after = optax.cosine_decay_schedule(peak, rest, alpha=cfg.end_lr_ratio)
  elif cfg.decay == "linear":
    after = optax.linear_schedule(peak, end, rest)
  else:
    after = optax.constant_schedule(peak)
  return optax.join_schedules([warm, after], [cfg.warmup_steps])


def decay_mask(params) -> dict:
  """True for matrices (embeddings, projections); False for norm scales and biases.

  Layer parameters are stacked, so the test is by name, not by rank.
  """
  def is_matrix(path, _):
    name = str(getattr(path[-1], "key", path[-1]))
    return not ("norm" in name or name.startswith("b"))
  return jax.tree_util.tree_map_with_path(is_matrix, params)


def optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
  parts = []
  if cfg.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(cfg.clip_norm))
  parts.append(optax.adamw(schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay, mask=decay_mask))
  return optax.chain(*parts)
