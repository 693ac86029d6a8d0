"""GPT-2: learned positions, GELU-tanh, tied embeddings. HF uses Conv1D, so weights are (in, out)."""
from __future__ import annotations

import numpy as np

from brd_jax.errors import UserError
from brd_jax.models.config import ModelConfig

MODEL_TYPES = ("gpt2",)


def config_from_hf(hf: dict) -> ModelConfig:
  if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("reorder_and_upcast_attn"):
    raise UserError("gpt2 scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn unsupported")
  act = hf.get("activation_function", "gelu_new")
  d, heads = hf["n_embd"], hf["n_head"]
  return ModelConfig(
      family="gpt2", vocab_size=hf["vocab_size"], d_model=d, n_layers=hf["n_layer"],
      n_heads=heads, n_kv_heads=heads, head_dim=d // heads, d_ff=hf.get("n_inner") or 4 * d,
      max_len=hf.get("n_positions", 1024), norm="layer",
      norm_eps=hf.get("layer_norm_epsilon", 1e-5),
      act="gelu_tanh" if act in ("gelu_new", "gelu_pytorch_tanh") else "gelu",
      gated_mlp=False, pos="learned", qkv_bias=True, o_bias=True, mlp_bias=True,
      tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
      bos_id=hf.get("bos_token_id"), eos_id=hf.get("eos_token_id"), pad_id=hf.get("pad_token_id"))


def config_to_hf(cfg: ModelConfig) -> dict:
  return {
      "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
      "vocab_size": cfg.vocab_size, "n_embd": cfg.d_model, "n_layer": cfg.n_layers,
      "n_head": cfg.n_heads, "n_inner": cfg.d_ff, "n_positions": cfg.max_len,
      "layer_norm_epsilon": cfg.norm_eps,
      "activation_function": "gelu_new" if cfg.act == "gelu_tanh" else "gelu",
      "tie_word_embeddings": cfg.tie_embeddings, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
      "attn_pdrop": 0.0, "bos_token_id": cfg.bos_id, "eos_token_id": cfg.eos_id,
      "pad_token_id": cfg.pad_id,
  }


def tensor_map(cfg: ModelConfig):
  """c_attn packs q|k|v along its output axis: each of ours reads its third; export joins them."""
  N, H, D = cfg.n_heads, cfg.head_dim, cfg.d_model
  ident = lambda w: w
  p = "transformer.h.{i}."
  third = lambda j: (lambda w: np.split(w, 3, axis=-1)[j])
  m = [
      (("embed",), "transformer.wte.weight", ident, ident),
      (("pos_embed",), "transformer.wpe.weight", ident, ident),
      (("final_norm",), "transformer.ln_f.weight", ident, ident),
      (("final_norm_b",), "transformer.ln_f.bias", ident, ident),
      (("layers", "attn_norm"), p + "ln_1.weight", ident, ident),
      (("layers", "attn_norm_b"), p + "ln_1.bias", ident, ident),
      (("layers", "mlp_norm"), p + "ln_2.weight", ident, ident),
      (("layers", "mlp_norm_b"), p + "ln_2.bias", ident, ident),
      (("layers", "wo"), p + "attn.c_proj.weight",
       lambda w: w.reshape(N, H, D), lambda w: w.reshape(N * H, D)),
      (("layers", "bo"), p + "attn.c_proj.bias", ident, ident),
      (("layers", "w_up"), p + "mlp.c_fc.weight", ident, ident),
      (("layers", "b_up"), p + "mlp.c_fc.bias", ident, ident),
      (("layers", "w_down"), p + "mlp.c_proj.weight", ident, ident),
      (("layers", "b_down"), p + "mlp.c_proj.bias", ident, ident),
  ]
  for j, ours in enumerate("qkv"):
    m.append((("layers", "w" + ours), p + "attn.c_attn.weight",
              lambda w, j=j: third(j)(w).reshape(D, N, H), None))
    m.append((("layers", "b" + ours), p + "attn.c_attn.bias",
              lambda b, j=j: third(j)(b).reshape(N, H), None))
  if not cfg.tie_embeddings:
    m.append((("lm_head",), "lm_head.weight", lambda w: w.T, lambda w: w.T))
  return m


def export_joins(cfg: ModelConfig):
  """HF tensors built from several of ours: name -> (our names, join fn)."""
  D = cfg.d_model
  p = "transformer.h.{i}."
  return {
      p + "attn.c_attn.weight": ((("layers", "wq"), ("layers", "wk"), ("layers", "wv")),
                                 lambda *ws: np.concatenate([w.reshape(D, -1) for w in ws], -1)),
      p + "attn.c_attn.bias": ((("layers", "bq"), ("layers", "bk"), ("layers", "bv")),
                               lambda *bs: np.concatenate([b.reshape(-1) for b in bs], -1)),
  }
