"""Turn a `--model` string into (model, config, tokenizer), decided by what the path holds."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib

from brd_jax.errors import UserError
from brd_jax.io_utils import as_path, is_url, local_copy
from brd_jax.models.config import ModelConfig


@dataclasses.dataclass
class Loaded:
  model: object
  cfg: ModelConfig
  tokenizer: object
  fingerprint: str
  source: str


def local_path(spec: str) -> pathlib.Path:
  """asset:NAME -> its cached file (fetched on first use); otherwise the path itself."""
  if spec.startswith("asset:"):
    from brd_jax import assets
    return assets.fetch(spec[len("asset:"):])
  if is_url(spec):  # a training workdir on object storage (Orbax reads it there)
    return as_path(spec)
  return pathlib.Path(spec).expanduser()


def fingerprint(p: pathlib.Path, cfg: ModelConfig) -> str:
  """Cheap content hash: config + every weight file's name, size, head and tail."""
  h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
  files = [p] if p.is_file() else sorted(
      f for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".gguf"))
  for f in files:
    size = f.stat().st_size
    h.update(f"{f.name}:{size}".encode())
    with open(f, "rb") as fh:
      h.update(fh.read(1 << 20))
      fh.seek(max(0, size - (1 << 20)))
      h.update(fh.read(1 << 20))
  return h.hexdigest()[:16]


def kind(p: pathlib.Path) -> str:
  if p.is_file() and p.suffix == ".gguf":
    return "gguf"
  if p.is_dir() and (p / "config.json").exists():
    return "hf"
  if p.is_dir() and ((p / "checkpoints").is_dir() or (p / "_CHECKPOINT_METADATA").exists()):
    return "orbax"
  return "unknown"


def load(spec: str, mesh=None, overrides: dict | None = None) -> Loaded:
  """Loads an HF model dir, a .gguf file or an asset, directly into `mesh`'s shardings."""
  p = local_path(spec)
  if not p.exists():
    raise UserError(f"--model {spec}: no such file or directory (hub ids need network access, "
                    "which this machine lacks; pass a local HF directory, a .gguf file or "
                    "asset:NAME)")
  k = kind(p)
  if is_url(p) and k != "orbax":
    raise UserError(f"--model {spec}: on object storage only `brd train` workdirs load; copy HF "
                    "directories and .gguf files to a local disk")
  if k == "gguf":
    from brd_jax.checkpoints import gguf
    model, cfg, tok = gguf.import_file(p, mesh, overrides)
  elif k == "hf":
    from brd_jax import tokenizer
    from brd_jax.checkpoints import hf
    model, cfg = hf.import_dir(p, mesh, overrides)
    tok = tokenizer.from_dir(p) if _has_tokenizer(p) else None
  elif k == "orbax":
    from brd_jax.checkpoints import orbax
    model, cfg, tok, step = orbax.load_model(p, mesh, overrides)
    return Loaded(model, cfg, tok, _orbax_fingerprint(p, cfg, step), f"{p}@{step}")
  else:
    raise UserError(f"--model {spec}: not a .gguf file or an HF model directory (config.json)")
  return Loaded(model, cfg, tok, fingerprint(p, cfg), str(p))


def load_config(spec: str, overrides: dict | None = None) -> ModelConfig | None:
  """The model's shape without its weights (None when the spec is not a model on this machine)."""
  if spec.startswith("asset:"):  # planning never downloads, but reads a fetched asset
    from brd_jax import assets
    name = spec[len("asset:"):]
    if not assets.is_fetched(name):
      return None
    spec = str(assets.path(name))
  p = local_path(spec)
  k = kind(p) if p.exists() else "missing"
  if k == "gguf":
    from brd_jax.checkpoints import gguf
    cfg = gguf.GGUFFile(p).config()
  elif k == "hf":
    from brd_jax.checkpoints import hf
    cfg = hf.config_from_hf(hf.read_config(p))
  elif k == "orbax":
    from brd_jax.checkpoints import orbax
    ck = orbax.Checkpoints(p, read_only=True)
    step = ck.latest_step()
    if step is None:
      return None
    cfg = ModelConfig.from_dict(ck.meta(step)["model"])
  else:
    return None
  return cfg.replace(**overrides) if overrides else cfg


def _orbax_fingerprint(p: pathlib.Path, cfg: ModelConfig, step: int) -> str:
  h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
  h.update(f"{p if is_url(p) else p.resolve()}@{step}".encode())
  return h.hexdigest()[:16]


def load_tokenizer(spec: str):
  """Only the tokenizer of a --model spec; 'bytes' is the built-in byte-level tokenizer."""
  from brd_jax import tokenizer
  if spec == "bytes":
    return tokenizer.byte_level()
  p = local_path(spec)
  k = kind(p)
  if k == "gguf":
    from brd_jax.checkpoints import gguf
    return gguf.GGUFFile(p).tokenizer()
  if k == "orbax":
    from brd_jax.checkpoints import orbax
    p = as_path(str(orbax.checkpoint_dir(p).parent / "tokenizer"))
  if p.is_dir() and _has_tokenizer(p):
    return tokenizer.from_dir(local_copy(p))
  raise UserError(f"tokenizer {spec}: not 'bytes', a .gguf file or a directory with a tokenizer")


def _has_tokenizer(p: pathlib.Path) -> bool:
  return any((p / n).exists() for n in ("tokenizer.json", "tokenizer.model",
                                         "sentencepiece.bpe.model", "spiece.model"))
