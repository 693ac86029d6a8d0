"""Analytic per-device memory and FLOPs of the train, generate and eval steps.

Parameter, optimizer and gradient bytes are exact: they are the shard shapes of the abstract state
and shardings the trainer itself builds (`step.abstract_train`). Activations follow the remat
policy: a scanned layer keeps its input (and, under `dots*`, its matmul outputs) for the backward
pass, and one layer at a time is recomputed in full. Logits dominate small models with large
vocabularies and are counted separately.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from jax.sharding import AbstractMesh

from brd_jax import sharding
from brd_jax.models.config import ModelConfig

_BYTES = {"float32": 4, "bfloat16": 2}


@dataclasses.dataclass
class Memory:
  """Per-device bytes of one step, by what holds them."""
  parts: dict[str, float]

  @property
  def total(self) -> float:
    return float(sum(self.parts.values()))


def abstract_mesh(shape) -> AbstractMesh:
  return AbstractMesh(tuple(shape), sharding.MESH_AXES)


def shard_bytes(tree) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs that carry shardings."""
  def one(x):
    shape = x.sharding.shard_shape(x.shape) if x.sharding is not None else x.shape
    return math.prod(shape) * np.dtype(x.dtype).itemsize
  return int(sum(one(x) for x in jax.tree.leaves(tree)))


def _split(n: int, k: int) -> float:
  """n split over k devices when k divides it (else the dimension stays whole)."""
  return n / k if k > 1 and n % k == 0 else n


def _rows(batch: int, mesh) -> float:
  return batch / max(sharding.batch_multiple(mesh), 1)


# Bytes per logit element in the loss's forward / backward: fp32 logits and their gradient, which
# XLA fuses in part. Fitted to TPU v5e compiles (bf16 and fp32 compute both land near 6.5).
LOGIT_BYTES = 6.5


def layer_terms(cfg: ModelConfig, b: float, T: int, S: int, t: int) -> dict[str, float]:
  """Bytes of one layer's tensors for b rows of T queries over S keys (tensor axis size t)."""
  c = _BYTES[cfg.dtype]
  D, F = cfg.d_model, _split(cfg.d_ff, t)
  N, K = _split(cfg.n_heads, t), _split(cfg.n_kv_heads, t)
  H = cfg.head_dim
  return {
      "residual": b * T * D * c,                         # the layer's input (the scan carry)
      # the matmul outputs the backward pass reads: q, k, v and the MLP's up (and gate)
      "projections": b * T * ((N + 2 * K) * H + (2 if cfg.gated_mlp else 1) * F) * c,
      "scores": b * N * T * S * 4,                       # fp32 attention scores (or probs)
      "attention_out": b * T * N * H * c,
      "elementwise": b * T * (2 * D + F) * c,            # norm outputs, activation output
  }


def saved_per_layer(terms: dict, remat: str) -> float:
  """What one layer keeps for the backward pass under a remat policy."""
  base = terms["residual"]
  if remat == "full":
    return base
  base += terms["projections"]
  if remat == "dots_no_batch":
    return base
  base += terms["scores"] + terms["attention_out"]  # the attention einsums are dots too
  if remat == "dots":
    return base
  return base + terms["scores"] + terms["elementwise"]  # none: the softmax output as well


def train(cfg: ModelConfig, state, batch_size: int, grad_accum: int, seq_len: int, mesh,
          kd_topk: int = 0) -> Memory:
  """One optimizer step: parameters, Adam moments, gradients, saved activations, and the larger
  of the loss's working set (logits) and one layer's recompute (they are not live together)."""
  params, opt = shard_bytes(state["params"]), shard_bytes(state["opt"])
  t = mesh.shape["tensor"]
  b = _rows(batch_size // grad_accum, mesh)
  T = seq_len
  terms = layer_terms(cfg, b, T, T, t)
  logits = b * T * _split(cfg.vocab_size, t) * (LOGIT_BYTES + (4 if kd_topk else 0))
  recompute = 0.0 if cfg.remat == "none" else terms["scores"] + terms["projections"]
  parts = {"params": params, "optimizer": opt, "gradients": params,
           "activations": cfg.n_layers * saved_per_layer(terms, cfg.remat),
           "logits" if logits >= recompute else "layer_recompute": max(logits, recompute),
           "batch": b * T * (5 * 4 + kd_topk * 8)}
  if grad_accum > 1:
    parts["gradient_accumulator"] = params
  return Memory(parts)


def _gathered_embedding(cfg: ModelConfig, t: int) -> float:
  """FSDP all-gathers a weight where it is used; the largest is the (vocab, d_model) table."""
  return _split(cfg.vocab_size, t) * cfg.d_model * _BYTES[cfg.dtype]


def _forward_activations(cfg: ModelConfig, b: float, T: int) -> float:
  """A forward-only step's live activations: ~4 d_model-wide tensors per token (fitted to TPU
  v5e compiles of prefill and scoring, whose attention XLA fuses)."""
  return b * T * 4 * cfg.d_model * _BYTES[cfg.dtype]


def slots(cfg: ModelConfig, params_bytes: float, sh: dict[str, int], k: int, mesh,
          top_n: int = 0) -> dict[str, Memory]:
  """The teacher engine's three programs at its shapes `sh` (`inference.slots.slot_shapes`): the
  preamble's prefill (once), the insertion of a full batch of prompts, and a chunk of verify steps
  (k drafts). The slots' state (KV cache, token history, outputs) is an argument of each; the
  preamble's keys are held once for all rows.
  What else is live was fitted to TPU v5e compiles (`aot.slot_steps`): a decode step holds one
  layer's weights gathered from their FSDP shards, and a second copy of the slots' cache or the
  gathered embedding with the step's fp32 logits, whichever is larger; an insertion holds the new
  rows' cache, their MLP activations and attention scores. Against the compiler (4-layer llama on
  FSDP 8, five shapes from 32 to 1024 slots; vicuna-13B on v5e:2x2 at 16-64 slots): decode
  steps -15% to +7%, but +37% for 256 small slots with k=4, where the compiler updated the cache
  in place; insertion -15% to +23%; preamble +1% to +8%."""
  t = mesh.shape["tensor"]
  P, S, W, T = sh["P"], sh["S"], sh["W"], sh["T"]
  b, c = _rows(sh["B"], mesh), _BYTES[cfg.dtype]
  K, N, V = _split(cfg.n_kv_heads, t), _split(cfg.n_heads, t), _split(cfg.vocab_size, t)
  kv_per_slot = 2 * cfg.n_layers * K * cfg.head_dim * c
  prefix_kv = kv_per_slot * P
  state = {"kv_cache": b * kv_per_slot * S, "prefix_kv": prefix_kv,
           "buffers": b * (S * 4 + W * (8 + 8 * top_n) + 16)}
  gathered = _gathered_embedding(cfg, t)
  embeddings = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)
  layer = (cfg.num_params() - embeddings) / cfg.n_layers * c / t
  gathered_layer = layer * (1 - t / math.prod(mesh.shape.values()))  # all but its own shard
  scores = lambda rows, q, keys: rows * N * q * keys * 4
  mlp = lambda rows, q: rows * q * (4 * cfg.d_model + 3 * _split(cfg.d_ff, t)) * c
  logits = lambda rows, q: rows * q * V * 4
  out = {"generate insert": Memory({
             "params": params_bytes, **state, "inserted_kv": b * kv_per_slot * T,
             "gathered_embedding": gathered,
             "activations": mlp(b, T) + scores(b, T, T + P) + logits(b, 1)}),
         "generate steps": Memory({"params": params_bytes, **state,
                                   "gathered_layer": gathered_layer, **(
             {"kv_cache (loop copy)": state["kv_cache"]}
             if state["kv_cache"] > gathered + logits(b, k + 1) else
             {"gathered_embedding": gathered, "logits": logits(b, k + 1)})})}
  if P:
    out = {"generate prefix": Memory({
        "params": params_bytes, "prefix_kv": prefix_kv,
        "activations": _forward_activations(cfg, 1, P) + 2 * scores(1, P, P)}), **out}
  return out


def score(cfg: ModelConfig, params_bytes: float, rows: int, T: int, mesh) -> Memory:
  """One scoring batch (forward only): weights, then the larger of the gathered embedding and the
  live activations."""
  t = mesh.shape["tensor"]
  act = _forward_activations(cfg, _rows(rows, mesh), T)
  gathered = _gathered_embedding(cfg, t)
  return Memory({"params": params_bytes,
                 "activations" if act > gathered else "gathered_embedding": max(act, gathered),
                 "batch": _rows(rows, mesh) * T * 4 * 7})
