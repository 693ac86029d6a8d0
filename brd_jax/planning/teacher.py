"""Roofline of the teacher's reading on one replica (one host's chips): units/s with and without
the engine's switches (continuous batching, shared-prefix cache, prompt-lookup speculation).

A decode step reads every weight and the live KV cache once and does 2 x params FLOPs per
verified token; its time is the larger of bytes / HBM bandwidth and FLOPs / peak (decode runs at
the roofline, no MFU discount). Prefill is compute-bound at `mfu`. What the switches change:
- continuous batching: a slot holds a unit for its own output length (mean), not the batch's
  longest (a static batch decodes until some row reaches max_new);
- prefix cache: only each unit's own tokens are prefilled; the preamble's keys are stored and read
  once for all rows, so per-row KV is own + output tokens and more rows fit in HBM;
- speculation (k drafts): tokens_per_step tokens per row-step for k+1 verified tokens' FLOPs.
The batch is the power of two (<= max_batch) with the most units/s whose weights + KV cache fit
(without speculation: the largest; with it, verify steps turn compute-bound past some batch).
The decode loop holds the slots' cache twice (`estimate.slots`, seen in TPU v5e compiles), so a
batch fits when weights + preamble + 2 x rows' KV take at most 90% of HBM.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Workload:
  preamble: int            # tokens shared by every unit of a behaviour (the few-shot prompt)
  own: int                 # the unit's own prompt tokens (sentence + chat markup)
  mean_out: float          # generated tokens per unit, on average
  max_out: int             # generate.max_new_tokens
  tokens_per_step: float = 1.0   # with speculation: emitted tokens per verify step of a row
  k: int = 0               # drafts verified per step (0: no speculation)


def kv_bytes_per_token(cfg, dtype_bytes: int = 2) -> int:
  return 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * dtype_bytes


def replica(cfg, w: Workload, chips: int, hbm_bytes: float, peak_flops: float, bandwidth: float,
            continuous: bool, prefix: bool, speculate: bool, mfu: float = 0.4,
            dtype_bytes: int = 2, max_batch: int = 1024) -> dict:
  """Units/s of one replica of `chips` devices (model sharded over them)."""
  n = cfg.num_params()
  params = n * dtype_bytes
  kvb = kv_bytes_per_token(cfg, dtype_bytes)
  k = w.k if speculate else 0
  per_row = (w.own + w.max_out + k) if prefix else (w.preamble + w.own + w.max_out)
  shared = w.preamble * kvb if prefix else 0
  free = chips * hbm_bytes * 0.9 - params - shared
  best = {"batch": 0, "units_per_s": 0.0, "fits": False}
  batch = 1
  while batch <= max_batch and 2 * batch * per_row * kvb <= free:
    r = at_batch(cfg, w, batch, chips, peak_flops, bandwidth, continuous, prefix, speculate, mfu,
                 dtype_bytes)
    if r["units_per_s"] > best["units_per_s"]:
      best = r
    batch *= 2
  return best


def at_batch(cfg, w: Workload, batch: int, chips: int, peak_flops: float, bandwidth: float,
             continuous: bool, prefix: bool, speculate: bool, mfu: float = 0.4,
             dtype_bytes: int = 2) -> dict:
  """Step time and units/s of one replica decoding `batch` slots (whether they fit is the
  caller's question)."""
  n = cfg.num_params()
  params, kvb = n * dtype_bytes, kv_bytes_per_token(cfg, dtype_bytes)
  shared = w.preamble * kvb if prefix else 0
  k = w.k if speculate else 0
  out = w.mean_out if continuous else w.max_out   # steps a slot is held, in tokens
  ctx = (w.own if prefix else w.preamble + w.own) + out / 2   # mean per-row KV read in a step
  step_bytes = params + shared + batch * ctx * kvb
  step_flops = 2 * n * batch * (k + 1)
  step_s = max(step_bytes / (chips * bandwidth), step_flops / (chips * peak_flops))
  tokens_per_step = w.tokens_per_step if speculate else 1.0
  units_per_step = batch * tokens_per_step / out
  prefill_tokens = w.own if prefix else w.preamble + w.own
  prefill_s = 2 * n * prefill_tokens / (chips * peak_flops * mfu)
  per_unit = step_s / units_per_step + prefill_s
  return {"batch": batch, "step_ms": step_s * 1e3,
          "bound": "memory" if step_bytes / bandwidth >= step_flops / peak_flops else "compute",
          "units_per_s": 1 / per_unit, "tokens_per_s": w.mean_out / per_unit, "fits": True}
