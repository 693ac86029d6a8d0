"""GGUF import for llama-architecture files: dequantise with the `gguf` package, undo the Q/K
RoPE row permutation llama.cpp applies, and read the tokenizer + chat template from metadata."""
from __future__ import annotations

import pathlib
import re

import numpy as np

from brd_jax.errors import UserError
from brd_jax.models.config import ModelConfig

SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")

_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_RE = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Inverse of llama.cpp's permute: per head, interleaved (even, odd) rows -> two halves."""
  rows = w.shape[0]
  return (w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2)
          .reshape(w.shape))


class GGUFFile:
  """A GGUF file viewed through HF llama tensor names (so the llama tensor map applies)."""

  def __init__(self, path: str | pathlib.Path):
    import gguf
    self.path = pathlib.Path(path)
    try:
      self._reader = gguf.GGUFReader(str(self.path))
    except Exception as e:  # corrupt header, wrong magic, truncated file
      raise UserError(f"cannot read GGUF file {self.path}: {str(e).splitlines()[0]}") from None
    self.meta = {k: _field_value(f) for k, f in self._reader.fields.items()}
    arch = self.meta.get("general.architecture")
    if arch != "llama":
      raise UserError(f"{self.path}: GGUF architecture {arch!r} is not supported (llama only)")
    self._tensors = {}
    for t in self._reader.tensors:
      self._tensors[self._hf_name(t.name)] = t

  @staticmethod
  def _hf_name(name: str) -> str:
    if name in _NAMES:
      return _NAMES[name]
    m = _LAYER_RE.match(name)
    if m and m.group(2) in _LAYER_NAMES:
      return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.{m.group(3)}"
    return name

  def config(self) -> ModelConfig:
    m, a = self.meta, "llama."
    need = lambda k: _require(m, a + k, self.path)
    heads = int(need("attention.head_count"))
    kv = int(m.get(a + "attention.head_count_kv", heads))
    d = int(need("embedding_length"))
    vocab = int(m.get(a + "vocab_size") or len(m["tokenizer.ggml.tokens"]))
    head_dim = int(m.get(a + "attention.key_length") or m.get(a + "rope.dimension_count")
                   or d // heads)
    eos = m.get("tokenizer.ggml.eos_token_id")
    return ModelConfig(
        family="llama", vocab_size=vocab, d_model=d, n_layers=int(need("block_count")),
        n_heads=heads, n_kv_heads=kv, head_dim=head_dim, d_ff=int(need("feed_forward_length")),
        max_len=int(m.get(a + "context_length", 2048)), norm="rms",
        norm_eps=float(m.get(a + "attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(m.get(a + "rope.freq_base", 10000.0)),
        tie_embeddings="lm_head.weight" not in self._tensors,
        qkv_bias="model.layers.0.self_attn.q_proj.bias" in self._tensors,
        o_bias="model.layers.0.self_attn.o_proj.bias" in self._tensors,
        bos_id=m.get("tokenizer.ggml.bos_token_id"), eos_id=eos,
        pad_id=m.get("tokenizer.ggml.padding_token_id"))

  def tokenizer(self):
    """The tokenizer from metadata, or None when the file carries none."""
    if "tokenizer.ggml.model" not in self.meta:
      return None
    from brd_jax import tokenizer
    return tokenizer.from_gguf_metadata(self.meta)

  def get(self, name: str) -> np.ndarray:
    """Dequantised fp32 tensor in HF (out, in) layout."""
    from gguf import quants
    if name not in self._tensors:
      raise UserError(f"{self.path}: tensor {name} not found")
    t = self._tensors[name]
    if t.tensor_type.name not in SUPPORTED_TYPES:
      raise UserError(f"{self.path}: tensor {t.name} has unsupported type {t.tensor_type.name} "
                      f"(supported: {', '.join(SUPPORTED_TYPES)})")
    w = np.asarray(quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
    w = w.reshape(tuple(int(s) for s in reversed(t.shape)))
    if name.endswith("self_attn.q_proj.weight") or name.endswith("self_attn.q_proj.bias"):
      w = unpermute_rope_rows(w, int(self.meta["llama.attention.head_count"]))
    elif name.endswith("self_attn.k_proj.weight") or name.endswith("self_attn.k_proj.bias"):
      heads = self.meta["llama.attention.head_count"]
      w = unpermute_rope_rows(w, int(self.meta.get("llama.attention.head_count_kv", heads)))
    return w


def _require(meta, key, path):
  if key not in meta:
    raise UserError(f"{path}: GGUF metadata lacks {key}")
  return meta[key]


def _field_value(field):
  try:
    return field.contents()
  except Exception:  # pylint: disable=broad-except  # exotic field types are not needed here
    return None


def import_file(path, mesh=None, overrides=None):
  """-> (model, config, tokenizer) from a llama-architecture GGUF file."""
  from brd_jax.checkpoints import hf
  from brd_jax.models import build
  f = GGUFFile(path)
  cfg = f.config()
  if overrides:
    cfg = cfg.replace(**overrides)
  model = build.load(cfg, hf.iter_tensors(cfg, f), mesh, source=str(path))
  return model, cfg, f.tokenizer()
