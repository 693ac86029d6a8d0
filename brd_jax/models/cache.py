"""KV caches: (layers, batch, kv_heads, slots, head_dim), sharded by logical axes.

Heads before slots so the grouped attention einsums read a layer's keys as they lie, with no
per-layer transpose (SmolLM2 on this CPU, 32 x 64-token prefill: 3.2 s vs 3.7-3.9 s with slots
first; decode steps equal within noise).

Both caches offer what `Decoder.__call__` asks of a cache: `positions`, `mask`, `write`, `attend`
and `advanced`.
- `KVCache`: one write index shared by all rows (prompts left-padded to a common end).
- `SlotCache`: each row its own length (continuous batching refills rows at different times),
  after a prefix whose keys/values are stored once for all rows (the few-shot preamble).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from brd_jax import sharding
from brd_jax.models.attention import attention_mask, grouped_attention, prefix_grouped_attention
from brd_jax.models.config import ModelConfig

CACHE_AXES = ("layers", "batch", "kv_heads", "length", "head_dim")
PREFIX_AXES = ("layers", "kv_heads", "length", "head_dim")


def _kv_zeros(cfg: ModelConfig, batch: int, max_len: int, dtype):
  shape = (cfg.n_layers, batch, cfg.n_kv_heads, max_len, cfg.head_dim)
  return sharding.constrain(jnp.zeros(shape, dtype), CACHE_AXES)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
  k: jax.Array          # L,B,K,S,H
  v: jax.Array          # L,B,K,S,H
  seg: jax.Array        # B,S int32 segment id per slot (0 = empty / padding)
  index: jax.Array      # () int32 next free slot (shared by all rows: prompts are left-padded)
  next_pos: jax.Array   # B int32 position of each row's next token

  @classmethod
  def zeros(cls, cfg: ModelConfig, batch: int, max_len: int, dtype) -> "KVCache":
    return cls(k=_kv_zeros(cfg, batch, max_len, dtype), v=_kv_zeros(cfg, batch, max_len, dtype),
               seg=sharding.constrain(jnp.zeros((batch, max_len), jnp.int32), ("batch", "length")),
               index=jnp.zeros((), jnp.int32),
               next_pos=jnp.zeros((batch,), jnp.int32))

  def positions(self, seg_BT):
    return jnp.maximum(jnp.cumsum(seg_BT != 0, axis=1) - 1, 0) + self.next_pos[:, None]

  def _kseg(self, seg_BT):
    return jax.lax.dynamic_update_slice_in_dim(self.seg, seg_BT, self.index, axis=1)

  def mask(self, seg_BT):
    T = seg_BT.shape[1]
    return attention_mask(seg_BT, self.index + jnp.arange(T), self._kseg(seg_BT),
                          jnp.arange(self.seg.shape[1]))

  def write(self, layer, k_BTKH, v_BTKH) -> "KVCache":
    """This layer's new keys land in place at (layer, index): a decode step never copies."""
    at = (layer, 0, 0, self.index, 0)
    put = lambda c, x: jax.lax.dynamic_update_slice(c, x.transpose(0, 2, 1, 3)[None].astype(c.dtype),
                                                    at)
    return dataclasses.replace(self, k=put(self.k, k_BTKH), v=put(self.v, v_BTKH))

  def attend(self, layer, q_BTNH, mask_B1TS, scale, dtype):
    k = jax.lax.dynamic_index_in_dim(self.k, layer, 0, keepdims=False)
    v = jax.lax.dynamic_index_in_dim(self.v, layer, 0, keepdims=False)
    return grouped_attention(q_BTNH.astype(k.dtype), k, v, mask_B1TS, scale).astype(dtype)

  def advanced(self, seg_BT) -> "KVCache":
    return KVCache(k=self.k, v=self.v, seg=self._kseg(seg_BT), index=self.index + seg_BT.shape[1],
                   next_pos=self.next_pos + jnp.sum(seg_BT != 0, axis=1).astype(jnp.int32))


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SlotCache:
  """Per-row caches after one shared prefix. A row's token t sits in slot t, at position
  prefix_len + t. The caller moves `length` (the model only writes at it): under speculative
  decoding only the accepted part of what was written counts."""
  k: jax.Array           # L,B,K,S,H
  v: jax.Array           # L,B,K,S,H
  length: jax.Array      # B int32 filled slots of each row
  prefix_k: jax.Array    # L,K,P,H (P may be 0)
  prefix_v: jax.Array    # L,K,P,H
  prefix_ok: jax.Array   # P bool: which prefix slots hold a token (the prefix is left-padded)
  prefix_len: jax.Array  # () int32 tokens in the prefix

  @classmethod
  def zeros(cls, cfg: ModelConfig, batch: int, max_len: int, dtype, prefix: KVCache | None = None
            ) -> "SlotCache":
    """`prefix`: a batch-1 KVCache holding the prefix (or None: no prefix)."""
    if prefix is None:
      empty = lambda: jnp.zeros((cfg.n_layers, cfg.n_kv_heads, 0, cfg.head_dim), dtype)
      pk, pv, ok, n = empty(), empty(), jnp.zeros((0,), bool), jnp.zeros((), jnp.int32)
    else:
      pk, pv = prefix.k[:, 0].astype(dtype), prefix.v[:, 0].astype(dtype)
      ok, n = prefix.seg[0] != 0, prefix.next_pos[0]
    return cls(k=_kv_zeros(cfg, batch, max_len, dtype), v=_kv_zeros(cfg, batch, max_len, dtype),
               length=jnp.zeros((batch,), jnp.int32),
               prefix_k=sharding.constrain(pk, PREFIX_AXES),
               prefix_v=sharding.constrain(pv, PREFIX_AXES), prefix_ok=ok, prefix_len=n)

  def positions(self, seg_BT):
    return self.prefix_len + self.length[:, None] + jnp.arange(seg_BT.shape[1])[None]

  def mask(self, seg_BT):
    """Causal over each row's own slots. A right-padding query sees real keys only up to its
    slot: its output is never read, and the slots it writes lie past `length`."""
    q_slot_BT = self.length[:, None] + jnp.arange(seg_BT.shape[1])[None]
    k_slot_S = jnp.arange(self.k.shape[3])
    return (k_slot_S[None, None, :] <= q_slot_BT[:, :, None])[:, None]

  def write(self, layer, k_BTKH, v_BTKH) -> "SlotCache":
    B, T = k_BTKH.shape[:2]
    rows = jnp.arange(B)[:, None]
    slots = self.length[:, None] + jnp.arange(T)[None]
    put = lambda c, x: c.at[layer, rows, :, slots, :].set(x.astype(c.dtype), mode="drop")
    return dataclasses.replace(self, k=put(self.k, k_BTKH), v=put(self.v, v_BTKH))

  def attend(self, layer, q_BTNH, mask_B1TS, scale, dtype):
    at = lambda c: jax.lax.dynamic_index_in_dim(c, layer, 0, keepdims=False).astype(self.k.dtype)
    return prefix_grouped_attention(q_BTNH.astype(self.k.dtype), at(self.prefix_k),
                                    at(self.prefix_v), self.prefix_ok, at(self.k), at(self.v),
                                    mask_B1TS, scale).astype(dtype)

  def advanced(self, seg_BT) -> "SlotCache":
    del seg_BT
    return self
