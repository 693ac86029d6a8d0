"""ModelConfig: the one description of a decoder; named configs live in configs/models/*.gin."""
from __future__ import annotations

import ast
import dataclasses
import math

import gin

from brd_jax.errors import UserError
from brd_jax.paths import MODELS_DIR

FAMILIES = ("llama", "xglm", "gpt2")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Decoder hyper-parameters. Hashable, so it can sit in an NNX graph definition."""
  family: str = "llama"
  vocab_size: int = 256
  d_model: int = 64
  n_layers: int = 2
  n_heads: int = 4
  n_kv_heads: int = 4
  head_dim: int = 16
  d_ff: int = 128
  max_len: int = 2048
  norm: str = "rms"            # rms | layer
  norm_eps: float = 1e-5
  act: str = "silu"            # silu | gelu | gelu_tanh
  gated_mlp: bool = True
  pos: str = "rope"            # rope | sinusoidal | learned
  pos_offset: int = 0          # XGLM's sinusoidal table starts at padding_idx + 1 = 2
  rope_theta: float = 10000.0
  rope_scaling: tuple = ()     # (("rope_type", "llama3"), ("factor", 8.0), ...)
  qkv_bias: bool = False
  o_bias: bool = False
  mlp_bias: bool = False
  tie_embeddings: bool = False
  scale_embeddings: bool = False  # XGLM multiplies token embeddings by sqrt(d_model)
  bos_id: int | None = None
  eos_id: int | None = None
  pad_id: int | None = None
  dtype: str = "float32"       # compute dtype; params stay param_dtype (fp32 master weights)
  param_dtype: str = "float32"
  remat: str = "none"
  scan_layers: bool = True

  def __post_init__(self):
    if isinstance(self.rope_scaling, dict):
      object.__setattr__(self, "rope_scaling", tuple(sorted(self.rope_scaling.items())))
    self.validate()

  def validate(self) -> None:
    def bad(name, why):
      raise UserError(f"model.{name}={getattr(self, name)!r}: {why}")
    if self.family not in FAMILIES:
      bad("family", f"must be one of {FAMILIES}")
    if self.norm not in ("rms", "layer"):
      bad("norm", "must be 'rms' or 'layer'")
    if self.act not in ("silu", "gelu", "gelu_tanh"):
      bad("act", "must be silu, gelu or gelu_tanh")
    if self.pos not in ("rope", "sinusoidal", "learned"):
      bad("pos", "must be rope, sinusoidal or learned")
    if self.remat not in REMAT_POLICIES:
      bad("remat", f"must be one of {REMAT_POLICIES}")
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff"):
      if getattr(self, name) <= 0:
        bad(name, "must be positive")
    if self.n_heads % self.n_kv_heads:
      bad("n_kv_heads", f"must divide model.n_heads={self.n_heads}")
    if self.pos == "rope" and self.head_dim % 2:
      bad("head_dim", "must be even for rotary embeddings")
    if self.dtype not in ("float32", "bfloat16") or self.param_dtype not in ("float32", "bfloat16"):
      bad("dtype", "dtype and param_dtype must be float32 or bfloat16")

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  @property
  def rope_scaling_dict(self) -> dict:
    return dict(self.rope_scaling)

  def num_params(self) -> int:
    """Exact parameter count (the stored tensors; XGLM's sinusoidal table is computed)."""
    n = sum(math.prod(shape) for shape, _, _ in layer_param_shapes(self).values())
    d = self.d_model
    n += self.vocab_size * d * (1 if self.tie_embeddings else 2)
    n += d * (2 if self.norm == "layer" else 1)
    if self.pos == "learned":
      n += self.max_len * d
    return n

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["rope_scaling"] = dict(self.rope_scaling)
    return d

  @classmethod
  def from_dict(cls, d: dict) -> "ModelConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
      raise UserError(f"unknown model config keys: {sorted(unknown)}")
    return cls(**d)


def layer_param_shapes(cfg: "ModelConfig") -> dict[str, tuple[tuple[int, ...], tuple[str, ...], str]]:
  """name -> (shape, logical axes, init) of each stacked per-layer parameter."""
  L, D, N, K, H, F = (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim,
                      cfg.d_ff)
  s = {
      "attn_norm": ((L, D), ("layers", "embed"), "ones"),
      "wq": ((L, D, N, H), ("layers", "embed", "heads", "head_dim"), "normal"),
      "wk": ((L, D, K, H), ("layers", "embed", "kv_heads", "head_dim"), "normal"),
      "wv": ((L, D, K, H), ("layers", "embed", "kv_heads", "head_dim"), "normal"),
      "wo": ((L, N, H, D), ("layers", "heads", "head_dim", "embed"), "normal"),
      "mlp_norm": ((L, D), ("layers", "embed"), "ones"),
      "w_up": ((L, D, F), ("layers", "embed", "mlp"), "normal"),
      "w_down": ((L, F, D), ("layers", "mlp", "embed"), "normal"),
  }
  if cfg.norm == "layer":
    s["attn_norm_b"] = ((L, D), ("layers", "embed"), "zeros")
    s["mlp_norm_b"] = ((L, D), ("layers", "embed"), "zeros")
  if cfg.qkv_bias:
    s["bq"] = ((L, N, H), ("layers", "heads", "head_dim"), "zeros")
    s["bk"] = ((L, K, H), ("layers", "kv_heads", "head_dim"), "zeros")
    s["bv"] = ((L, K, H), ("layers", "kv_heads", "head_dim"), "zeros")
  if cfg.o_bias:
    s["bo"] = ((L, D), ("layers", "embed"), "zeros")
  if cfg.gated_mlp:
    s["w_gate"] = ((L, D, F), ("layers", "embed", "mlp"), "normal")
  if cfg.mlp_bias:
    s["b_up"] = ((L, F), ("layers", "mlp"), "zeros")
    s["b_down"] = ((L, D), ("layers", "embed"), "zeros")
  return s


def model_config(**overrides) -> ModelConfig:
  """The model as bound in gin (`model.d_model = 576`, ...)."""
  return ModelConfig.from_dict(overrides)


# The allowlist makes gin reject unknown `model.*` names at parse time.
model_config = gin.configurable(
    "model", allowlist=[f.name for f in dataclasses.fields(ModelConfig)])(model_config)




def named_configs() -> list[str]:
  return sorted(p.stem for p in MODELS_DIR.glob("*.gin"))


def named_config(name: str) -> ModelConfig:
  """Reads configs/models/NAME.gin (literal `model.KEY = VALUE` lines) without touching gin state."""
  path = MODELS_DIR / f"{name}.gin"
  if not path.exists():
    raise UserError(f"unknown model config {name!r}; known: {', '.join(named_configs())}")
  values = {}
  for lineno, line in enumerate(path.read_text().splitlines(), 1):
    line = line.split("#", 1)[0].strip()
    if not line:
      continue
    key, sep, value = line.partition("=")
    key = key.strip()
    if not sep or not key.startswith("model."):
      raise UserError(f"{path}:{lineno}: expected 'model.KEY = VALUE'")
    try:
      values[key[len("model."):]] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      raise UserError(f"{path}:{lineno}: value is not a literal: {value.strip()}") from None
  return ModelConfig.from_dict(values)


def sqrt_d(cfg: ModelConfig) -> float:
  return math.sqrt(cfg.d_model) if cfg.scale_embeddings else 1.0
