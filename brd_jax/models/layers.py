"""The decoder shared by every family: parameters stacked over layers, one pure block function.

Shapes in names: B batch, T query length, S key length (cache slots), D d_model, N query heads,
K kv heads, H head_dim, F d_ff, V vocab, L layers. Parameters carry logical `axes` metadata that
`sharding.py` maps to the (data, fsdp, tensor) mesh.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from brd_jax import sharding
from brd_jax.models.attention import attention_mask, grouped_attention
from brd_jax.models.cache import KVCache
from brd_jax.models.config import ModelConfig, layer_param_shapes, sqrt_d

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _param(rngs, shape, axes, dtype, init="normal"):
  if init == "ones":
    value = jnp.ones(shape, dtype)
  elif init == "zeros":
    value = jnp.zeros(shape, dtype)
  else:
    value = (0.02 * jax.random.normal(rngs.params(), shape)).astype(dtype)
  return nnx.Param(value, axes=axes)


def norm(cfg: ModelConfig, x, w, b=None):
  """RMSNorm or LayerNorm, computed in fp32 (as HF does), returned in x's dtype."""
  x32 = x.astype(jnp.float32)
  if cfg.norm == "rms":
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + cfg.norm_eps)
    return (w.astype(jnp.float32) * y).astype(x.dtype)
  mu = jnp.mean(x32, -1, keepdims=True)
  var = jnp.mean(jnp.square(x32 - mu), -1, keepdims=True)
  y = (x32 - mu) * jax.lax.rsqrt(var + cfg.norm_eps) * w.astype(jnp.float32)
  if b is not None:
    y = y + b.astype(jnp.float32)
  return y.astype(x.dtype)


def _activation(cfg: ModelConfig, x):
  if cfg.act == "silu":
    return jax.nn.silu(x)
  return jax.nn.gelu(x, approximate=cfg.act == "gelu_tanh")


def rope_inv_freq(cfg: ModelConfig) -> jnp.ndarray:
  """Rotary inverse frequencies, with llama3 frequency-band rescaling when configured."""
  H = cfg.head_dim
  inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, H, 2, dtype=jnp.float32) / H))
  rs = cfg.rope_scaling_dict
  kind = rs.get("rope_type", rs.get("type"))
  if kind == "llama3":
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    orig = rs["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    scaled = jnp.where(wavelen > orig / lo, inv / factor, inv)
    smooth = (orig / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= orig / hi) & (wavelen <= orig / lo)
    inv = jnp.where(medium, smoothed, scaled)
  elif kind == "linear":
    inv = inv / rs["factor"]
  elif kind not in (None, "default"):
    raise ValueError(f"unsupported rope_scaling type {kind!r}")
  return inv


def apply_rope(x_BTNH, positions_BT, inv_freq):
  """Rotate-half rotary embedding (the HF / Meta-converted layout)."""
  freqs = positions_BT[..., None].astype(jnp.float32) * inv_freq  # B,T,H/2
  emb = jnp.concatenate([freqs, freqs], -1)[:, :, None, :]
  cos, sin = jnp.cos(emb), jnp.sin(emb)
  x32 = x_BTNH.astype(jnp.float32)
  x1, x2 = jnp.split(x32, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], -1)
  return (x32 * cos + rotated * sin).astype(x_BTNH.dtype)


def sinusoidal(positions_BT, d: int, offset: int):
  """XGLM/fairseq sinusoidal table row `pos + offset`: [sin | cos] halves."""
  half = d // 2
  scale = math.log(10000) / (half - 1)
  freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -scale)
  ang = (positions_BT + offset).astype(jnp.float32)[..., None] * freqs
  emb = jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], -1)
  if d % 2:
    emb = jnp.pad(emb, [(0, 0), (0, 0), (0, 1)])
  return emb


def matmul(x_BTD, w_DF):
  """x @ w, with its own backward products on CPU (custom VJP), for two reasons found by
  profiling the train step on XLA:CPU (jaxlib 0.10):
  - bf16: the product is taken as bf16 x bf16 -> fp32, then rounded to bf16: the numbers XLA
    computes for a bf16 dot anyway, but XLA:CPU keeps a dot's bf16 operands only when its result
    is fp32, and then runs it on AMX (~5x its fp32 dot here); a bf16-result dot it upcasts to
    fp32, slower than fp32 itself.
  - fp32 too: autodiff's weight gradient of `x @ w` inside the layer scan came out as a plain dot
    fed by a loop fusion that transposed the MLP's gradient while computing it (strided reads of
    five inputs: 52 ms a layer for a 1024 x 1536 tile, 2.4 s of a 7-8 s SmolLM2 step); the
    gradient written as its own einsum runs as one XNNPACK dot (the step 8.4 s -> 5.3 s).
  Accelerators keep the plain dot and its autodiff."""
  if (sharding.platform() != "cpu" or x_BTD.dtype != w_DF.dtype
      or x_BTD.dtype not in (jnp.float32, jnp.bfloat16)):
    return x_BTD @ w_DF
  return _cpu_matmul(x_BTD, w_DF)


def _product(a, b, spec):
  if a.dtype == jnp.float32:
    return jnp.einsum(spec, a, b)
  return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32).astype(jnp.bfloat16)


@jax.custom_vjp
def _cpu_matmul(x, w):
  return _product(x, w, "...d,df->...f")


def _cpu_matmul_fwd(x, w):
  return _cpu_matmul(x, w), (x, w)


def _cpu_matmul_bwd(res, g):
  x, w = res
  g = g.astype(x.dtype)
  return _product(g, w, "...f,df->...d"), _product(x, g, "...d,...f->df")


_cpu_matmul.defvjp(_cpu_matmul_fwd, _cpu_matmul_bwd)


def cache_dtype(cfg: ModelConfig):
  """The KV cache's dtype: the compute dtype, except fp32 for bf16 on CPU, where XLA upcasts a
  bf16 attention einsum's operands and so converted the whole cache on every decode step (~30 ms
  a layer for SmolLM2 at batch 32: bf16 decoding ran at 0.7x fp32's speed)."""
  dt = _DTYPES[cfg.dtype]
  return jnp.float32 if dt == jnp.bfloat16 and sharding.platform() == "cpu" else dt


def _proj(h_BTD, w_DNH):
  """(B,T,D) x (D,N,H) -> (B,T,N,H) as one 2-D matmul."""
  D, N, H = w_DNH.shape
  return matmul(h_BTD, w_DNH.reshape(D, N * H)).reshape(*h_BTD.shape[:2], N, H)


def block(cfg: ModelConfig, p: dict, x_BTD, positions_BT, mask_B1TS, inv_freq, kv=None, layer=None):
  """One pre-norm transformer layer.

  kv: the whole cache (`KVCache` or `SlotCache`), which writes this layer's new keys in place and
  attends over them. Cached attention is the grouped einsum on every backend: with a few queries
  per row there is nothing for a fused kernel to fuse.
  """
  dt = _DTYPES[cfg.dtype]
  p = {k: v.astype(dt) for k, v in p.items()}
  h = norm(cfg, x_BTD, p["attn_norm"], p.get("attn_norm_b"))
  q, k, v = _proj(h, p["wq"]), _proj(h, p["wk"]), _proj(h, p["wv"])
  if cfg.qkv_bias:
    q, k, v = q + p["bq"], k + p["bk"], v + p["bv"]
  if cfg.pos == "rope":
    q, k = apply_rope(q, positions_BT, inv_freq), apply_rope(k, positions_BT, inv_freq)
  q = sharding.constrain(q, ("batch", "length", "heads", "head_dim"))
  if kv is not None:
    kv = kv.write(layer, k, v)
    o = kv.attend(layer, q, mask_B1TS, cfg.head_dim ** -0.5, dt)
  elif sharding.platform() == "cpu":
    o = grouped_attention(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), mask_B1TS,
                          cfg.head_dim ** -0.5)
  else:
    o = jax.nn.dot_product_attention(q, k, v, mask=mask_B1TS, scale=cfg.head_dim ** -0.5)
  # 2-D matmuls on reshaped (free) weight views: XLA CPU would otherwise transpose weights
  # inside the decode loop on every step.
  o = matmul(o.reshape(*o.shape[:2], -1), p["wo"].reshape(-1, p["wo"].shape[-1]))
  if cfg.o_bias:
    o = o + p["bo"]
  x_BTD = sharding.constrain(x_BTD + o, ("batch", "length", "embed"))
  h = norm(cfg, x_BTD, p["mlp_norm"], p.get("mlp_norm_b"))
  up = matmul(h, p["w_up"])
  if cfg.mlp_bias:
    up = up + p["b_up"]
  if cfg.gated_mlp:
    a = _activation(cfg, matmul(h, p["w_gate"])) * up
  else:
    a = _activation(cfg, up)
  a = sharding.constrain(a, ("batch", "length", "mlp"))
  out = matmul(a, p["w_down"])
  if cfg.mlp_bias:
    out = out + p["b_down"]
  return sharding.constrain(x_BTD + out, ("batch", "length", "embed")), kv


_REMAT = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class Decoder(nnx.Module):
  """Decoder-only LM (llama / XGLM / GPT-2 by config)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    pdt = _DTYPES[cfg.param_dtype]
    D, V = cfg.d_model, cfg.vocab_size
    self.embed = _param(rngs, (V, D), ("vocab", "embed"), pdt)
    if cfg.pos == "learned":
      self.pos_embed = _param(rngs, (cfg.max_len, D), (None, "embed"), pdt)
    self.layers = nnx.Dict({n: _param(rngs, s, a, pdt, i)
                            for n, (s, a, i) in layer_param_shapes(cfg).items()})
    self.final_norm = _param(rngs, (D,), ("embed",), pdt, "ones")
    if cfg.norm == "layer":
      self.final_norm_b = _param(rngs, (D,), ("embed",), pdt, "zeros")
    if not cfg.tie_embeddings:
      self.lm_head = _param(rngs, (D, V), ("embed", "vocab"), pdt)

  def init_cache(self, batch: int, max_len: int, dtype=None) -> KVCache:
    return KVCache.zeros(self.cfg, batch, max_len, dtype or cache_dtype(self.cfg))

  def __call__(self, tokens_BT, positions_BT=None, segment_ids_BT=None, cache=None,
               return_hidden: bool = False, layer_params=None, mask_B1TS=None):
    """Returns (logits_BTV fp32, updated cache or None).

    layer_params: per-layer parameter dicts (`split_layers`) used instead of slicing the stacked
    ones; the layers then run unrolled.
    mask_B1TS: an explicit attention mask (no cache), e.g. candidates sharing one prefix in a row.

    segment_ids: 0 = padding, equal ids attend to each other (packing); default all ones.
    positions: default = index within the non-padding tokens of each row (left padding).
    """
    cfg = self.cfg
    dt = _DTYPES[cfg.dtype]
    B, T = tokens_BT.shape
    seg = jnp.ones((B, T), jnp.int32) if segment_ids_BT is None else segment_ids_BT.astype(jnp.int32)
    if positions_BT is None:
      positions_BT = (jnp.maximum(jnp.cumsum(seg != 0, axis=1) - 1, 0) if cache is None
                      else cache.positions(seg))
    x = jnp.take(self.embed[...], tokens_BT, axis=0).astype(dt) * jnp.asarray(sqrt_d(cfg), dt)
    if cfg.pos == "learned":
      x = x + jnp.take(self.pos_embed[...], positions_BT, axis=0).astype(dt)
    elif cfg.pos == "sinusoidal":
      x = x + sinusoidal(positions_BT, cfg.d_model, cfg.pos_offset).astype(dt)
    x = sharding.constrain(x, ("batch", "length", "embed"))
    inv_freq = rope_inv_freq(cfg) if cfg.pos == "rope" else None

    if cache is None:
      slots = jnp.arange(T)
      mask = attention_mask(seg, slots, seg, slots) if mask_B1TS is None else mask_B1TS
    else:
      mask = cache.mask(seg)

    fn = lambda p, x, kv, i: block(cfg, p, x, positions_BT, mask, inv_freq, kv, i)
    if cfg.remat != "none":
      fn = jax.checkpoint(fn, policy=_REMAT[cfg.remat], prevent_cse=not cfg.scan_layers)
    params = {k: v[...] for k, v in self.layers.items()}
    kv = cache
    if layer_params is not None:
      for i, p in enumerate(layer_params):
        x, kv = fn(p, x, kv, i)
    elif cfg.scan_layers:
      def body(carry, xs):
        x, kv = carry
        p, i = xs
        x, kv = fn(p, x, kv, i)
        return (x, kv), None
      (x, kv), _ = jax.lax.scan(body, (x, kv), (params, jnp.arange(cfg.n_layers)))
    else:
      for i in range(cfg.n_layers):
        x, kv = fn({k: v[i] for k, v in params.items()}, x, kv, i)

    x = norm(cfg, x, self.final_norm[...], self.final_norm_b[...] if cfg.norm == "layer" else None)
    new_cache = None
    if cache is not None:
      new_cache = kv.advanced(seg)
    if return_hidden:
      return x, new_cache
    return self.logits(x), new_cache

  def split_layers(self) -> list[dict]:
    """One dict of separate arrays per layer, for `__call__(layer_params=...)`.

    XLA CPU copies a layer's weights out of the stacked arrays on every use (scan or not); inside a
    decode loop that is all the weights once per token. Separate buffers avoid it (SmolLM2, batch 32,
    this CPU: ~205 -> ~178 ms a step) at the cost of a second copy of the layer weights.
    """
    return [{k: v[...][i] for k, v in self.layers.items()} for i in range(self.cfg.n_layers)]

  def logits(self, x_BTD):
    """Final hidden states -> fp32 logits (the engine calls this on the last position only)."""
    dt = _DTYPES[self.cfg.dtype]
    if self.cfg.tie_embeddings:
      logits = matmul(x_BTD, self.embed[...].astype(dt).T)
    else:
      logits = matmul(x_BTD, self.lm_head[...].astype(dt))
    return sharding.constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))
