"""Student initialisation: from scratch, from a model, or a shallower copy of a model."""
from __future__ import annotations

import jax
import numpy as np

from brd_jax.errors import UserError
from brd_jax.models import build
from brd_jax.models import config as model_config
from brd_jax.training.config import StudentConfig


def keep_layers(model, every: int, mesh=None):
  """Keeps layers 0, k, 2k, ... (the CPU demo's student is the teacher with every 3rd layer)."""
  cfg = model.cfg
  keep = list(range(0, cfg.n_layers, every))
  new_cfg = cfg.replace(n_layers=len(keep))
  idx = np.asarray(keep)

  def tensors():
    for path, arr in build.flat_params(model).items():
      host = np.asarray(jax.device_get(arr))
      yield path, (host[idx] if path[0] == "layers" else host)
  return build.load(new_cfg, tensors(), mesh, source=f"every {every}th layer"), new_cfg


def init(scfg: StudentConfig, mesh, seed: int = 0):
  """-> (model, cfg, tokenizer, provenance dict)."""
  from brd_jax.checkpoints import resolve
  if scfg.keep_every < 1:
    raise UserError(f"student.keep_every={scfg.keep_every}: must be >= 1")
  if scfg.init == "scratch":
    cfg = model_config.model_config().replace(**scfg.overrides())
    if not scfg.tokenizer:
      raise UserError("a scratch student needs student.tokenizer ('bytes' or a model spec)")
    tok = resolve.load_tokenizer(scfg.tokenizer)
    if tok.vocab_size > cfg.vocab_size:
      raise UserError(f"model.vocab_size={cfg.vocab_size} is smaller than the tokenizer's "
                      f"{tok.vocab_size} tokens")
    model = build.create(cfg, mesh, seed)
    prov = {"init": "scratch", "tokenizer": scfg.tokenizer, "seed": seed}
  else:
    loaded = resolve.load(scfg.init, mesh, scfg.overrides())
    model, cfg, tok = loaded.model, loaded.cfg, loaded.tokenizer
    if tok is None and scfg.tokenizer:
      tok = resolve.load_tokenizer(scfg.tokenizer)
    if tok is None:
      raise UserError(f"student.init={scfg.init}: no tokenizer found; set student.tokenizer")
    prov = {"init": loaded.source, "fingerprint": loaded.fingerprint}
  if scfg.keep_every > 1:
    model, cfg = keep_layers(model, scfg.keep_every, mesh)
    prov["keep_every"] = scfg.keep_every
  return model, cfg, tok, prov
