"""XGLM (the paper's student): sinusoidal positions offset by 2, sqrt(d) embedding scale, pre-LN, GELU."""
from __future__ import annotations

from brd_jax.errors import UserError
from brd_jax.models.config import ModelConfig

MODEL_TYPES = ("xglm",)


def config_from_hf(hf: dict) -> ModelConfig:
  act = hf.get("activation_function", "gelu")
  if act not in ("gelu", "gelu_new"):
    raise UserError(f"xglm activation_function={act!r} is not supported")
  d, heads = hf["d_model"], hf["attention_heads"]
  return ModelConfig(
      family="xglm", vocab_size=hf["vocab_size"], d_model=d, n_layers=hf["num_layers"],
      n_heads=heads, n_kv_heads=heads, head_dim=d // heads, d_ff=hf["ffn_dim"],
      max_len=hf.get("max_position_embeddings", 2048), norm="layer", norm_eps=1e-5,
      act="gelu" if act == "gelu" else "gelu_tanh", gated_mlp=False, pos="sinusoidal",
      pos_offset=2, qkv_bias=True, o_bias=True, mlp_bias=True,
      tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
      scale_embeddings=bool(hf.get("scale_embedding", True)),
      bos_id=hf.get("bos_token_id"), eos_id=hf.get("eos_token_id"), pad_id=hf.get("pad_token_id"))


def config_to_hf(cfg: ModelConfig) -> dict:
  return {
      "architectures": ["XGLMForCausalLM"], "model_type": "xglm",
      "vocab_size": cfg.vocab_size, "d_model": cfg.d_model, "num_layers": cfg.n_layers,
      "attention_heads": cfg.n_heads, "ffn_dim": cfg.d_ff,
      "max_position_embeddings": cfg.max_len, "activation_function":
      "gelu" if cfg.act == "gelu" else "gelu_new", "scale_embedding": cfg.scale_embeddings,
      "tie_word_embeddings": cfg.tie_embeddings, "dropout": 0.0, "attention_dropout": 0.0,
      "activation_dropout": 0.0, "layerdrop": 0.0,
      "bos_token_id": cfg.bos_id, "eos_token_id": cfg.eos_id,
      "pad_token_id": 1 if cfg.pad_id is None else cfg.pad_id,
      "decoder_start_token_id": 2,
  }


def tensor_map(cfg: ModelConfig):
  N, H, D = cfg.n_heads, cfg.head_dim, cfg.d_model
  T = lambda w: w.T
  ident = lambda w: w
  heads_in = lambda w: w.T.reshape(D, N, H)
  heads_out = lambda w: w.reshape(D, N * H).T
  p = "model.layers.{i}."
  m = [
      (("embed",), "model.embed_tokens.weight", ident, ident),
      (("final_norm",), "model.layer_norm.weight", ident, ident),
      (("final_norm_b",), "model.layer_norm.bias", ident, ident),
      (("layers", "attn_norm"), p + "self_attn_layer_norm.weight", ident, ident),
      (("layers", "attn_norm_b"), p + "self_attn_layer_norm.bias", ident, ident),
      (("layers", "mlp_norm"), p + "final_layer_norm.weight", ident, ident),
      (("layers", "mlp_norm_b"), p + "final_layer_norm.bias", ident, ident),
      (("layers", "wo"), p + "self_attn.out_proj.weight",
       lambda w: w.T.reshape(N, H, D), lambda w: w.reshape(N * H, D).T),
      (("layers", "bo"), p + "self_attn.out_proj.bias", ident, ident),
      (("layers", "w_up"), p + "fc1.weight", T, T),
      (("layers", "b_up"), p + "fc1.bias", ident, ident),
      (("layers", "w_down"), p + "fc2.weight", T, T),
      (("layers", "b_down"), p + "fc2.bias", ident, ident),
  ]
  for ours, hf in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj")):
    m.append((("layers", "w" + ours), p + f"self_attn.{hf}.weight", heads_in, heads_out))
    m.append((("layers", "b" + ours), p + f"self_attn.{hf}.bias",
              lambda b: b.reshape(N, H), lambda b: b.reshape(-1)))
  if not cfg.tie_embeddings:
    m.append((("lm_head",), "lm_head.weight", T, T))
  return m
