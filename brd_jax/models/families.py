"""Family registry: HF model_type -> the module holding its config and tensor maps."""
from __future__ import annotations

from types import ModuleType

from brd_jax.errors import UserError
from brd_jax.models import gpt2, llama, xglm

BY_FAMILY: dict[str, ModuleType] = {"llama": llama, "xglm": xglm, "gpt2": gpt2}


def for_model_type(model_type: str) -> ModuleType:
  for mod in BY_FAMILY.values():
    if model_type in mod.MODEL_TYPES:
      return mod
  known = sorted(t for m in BY_FAMILY.values() for t in m.MODEL_TYPES)
  raise UserError(f"unsupported model_type {model_type!r} (supported: {', '.join(known)})")


def export_joins(cfg) -> dict:
  mod = BY_FAMILY[cfg.family]
  return mod.export_joins(cfg) if hasattr(mod, "export_joins") else {}
