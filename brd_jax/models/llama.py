"""Llama family (Vicuna, Llama-2/3, Mistral- and Qwen2-shaped, SmolLM2): HF config and tensor maps.

HF Linear weights are (out, in); ours are (in, ...) with heads split out, e.g. wq (D, N, H).
"""
from __future__ import annotations

from brd_jax.errors import UserError
from brd_jax.models.config import ModelConfig

MODEL_TYPES = ("llama", "mistral", "qwen2")


def rope_from_hf(hf: dict) -> tuple[float, dict]:
  """(theta, scaling) from either the v5 `rope_parameters` or the v4 `rope_theta`/`rope_scaling`."""
  params = dict(hf.get("rope_parameters") or {})
  theta = float(params.pop("rope_theta", hf.get("rope_theta", 10000.0)))
  scaling = dict(hf.get("rope_scaling") or {}) or params
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  if kind == "default":
    return theta, {}
  if kind not in ("llama3", "linear"):
    raise UserError(f"unsupported rope scaling {kind!r} (supported: llama3, linear)")
  keep = ("rope_type", "factor", "low_freq_factor", "high_freq_factor",
          "original_max_position_embeddings")
  out = {k: scaling[k] for k in keep if k in scaling}
  out["rope_type"] = kind
  return theta, out


def config_from_hf(hf: dict) -> ModelConfig:
  mt = hf.get("model_type", "llama")
  if hf.get("mlp_bias"):
    raise UserError("llama mlp_bias=True is not supported")
  act = hf.get("hidden_act", "silu")
  if act != "silu":
    raise UserError(f"llama hidden_act={act!r} is not supported (silu only)")
  heads = hf["num_attention_heads"]
  theta, scaling = rope_from_hf(hf)
  attn_bias = bool(hf.get("attention_bias", False))
  return ModelConfig(
      family="llama", vocab_size=hf["vocab_size"], d_model=hf["hidden_size"],
      n_layers=hf["num_hidden_layers"], n_heads=heads,
      n_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
      d_ff=hf["intermediate_size"], max_len=hf.get("max_position_embeddings", 2048),
      norm="rms", norm_eps=hf.get("rms_norm_eps", 1e-6), act="silu", gated_mlp=True, pos="rope",
      rope_theta=theta, rope_scaling=tuple(sorted(scaling.items())),
      qkv_bias=attn_bias or mt == "qwen2", o_bias=attn_bias and mt != "qwen2",
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      bos_id=hf.get("bos_token_id"), eos_id=_first(hf.get("eos_token_id")),
      pad_id=hf.get("pad_token_id"))


def _first(x):
  return x[0] if isinstance(x, list) and x else x


def config_to_hf(cfg: ModelConfig) -> dict:
  qwen = cfg.qkv_bias and not cfg.o_bias
  if cfg.o_bias and not cfg.qkv_bias:
    raise UserError("an output-projection bias without qkv biases has no HF llama equivalent")
  rope = {"rope_type": "default", "rope_theta": cfg.rope_theta, **cfg.rope_scaling_dict}
  hf = {
      "architectures": ["Qwen2ForCausalLM" if qwen else "LlamaForCausalLM"],
      "model_type": "qwen2" if qwen else "llama",
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
      "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
      "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim,
      "intermediate_size": cfg.d_ff, "max_position_embeddings": cfg.max_len,
      "rms_norm_eps": cfg.norm_eps, "hidden_act": "silu", "rope_parameters": rope,
      "attention_bias": cfg.o_bias, "mlp_bias": False,
      "tie_word_embeddings": cfg.tie_embeddings,
      "bos_token_id": cfg.bos_id, "eos_token_id": cfg.eos_id, "pad_token_id": cfg.pad_id,
  }
  if qwen:
    hf["use_sliding_window"] = False
  return hf


def _in_heads(n):
  """HF (n*h, d) -> ours (d, n, h)."""
  return lambda w: w.T.reshape(w.shape[1], n, -1)


def _out_heads(w):
  """ours (d, n, h) -> HF (n*h, d)."""
  return w.reshape(w.shape[0], -1).T


def tensor_map(cfg: ModelConfig):
  """(ours, HF name, to_ours, to_hf) for top-level and per-layer (`{i}`) tensors."""
  N, K, H, D = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_model
  T = lambda w: w.T
  ident = lambda w: w
  p = "model.layers.{i}."
  m = [
      (("embed",), "model.embed_tokens.weight", ident, ident),
      (("final_norm",), "model.norm.weight", ident, ident),
      (("layers", "attn_norm"), p + "input_layernorm.weight", ident, ident),
      (("layers", "mlp_norm"), p + "post_attention_layernorm.weight", ident, ident),
      (("layers", "wq"), p + "self_attn.q_proj.weight", _in_heads(N), _out_heads),
      (("layers", "wk"), p + "self_attn.k_proj.weight", _in_heads(K), _out_heads),
      (("layers", "wv"), p + "self_attn.v_proj.weight", _in_heads(K), _out_heads),
      (("layers", "wo"), p + "self_attn.o_proj.weight",
       lambda w: w.T.reshape(N, H, D), lambda w: w.reshape(N * H, D).T),
      (("layers", "w_gate"), p + "mlp.gate_proj.weight", T, T),
      (("layers", "w_up"), p + "mlp.up_proj.weight", T, T),
      (("layers", "w_down"), p + "mlp.down_proj.weight", T, T),
  ]
  if not cfg.tie_embeddings:
    m.append((("lm_head",), "lm_head.weight", T, T))
  if cfg.qkv_bias:
    for ours, hf, n in (("bq", "q_proj", N), ("bk", "k_proj", K), ("bv", "v_proj", K)):
      m.append((("layers", ours), p + f"self_attn.{hf}.bias",
                lambda b, n=n: b.reshape(n, H), lambda b: b.reshape(-1)))
  if cfg.o_bias:
    m.append((("layers", "bo"), p + "self_attn.o_proj.bias", ident, ident))
  return m
