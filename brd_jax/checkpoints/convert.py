"""`brd convert`'s entry point: any model spec (HF dir, GGUF, Orbax run, asset) to an HF directory
that appears whole: written beside the target, then renamed over it."""
from __future__ import annotations

import pathlib
import shutil
import tempfile

from brd_jax.checkpoints import hf, resolve
from brd_jax.errors import UserError
from brd_jax.io_utils import atomic_write_text


def run(model: str, to, mesh=None, dtype: str = "float32", overwrite: bool = False,
        operative_config: str = "") -> resolve.Loaded:
  """Writes `model` to the HF directory `to` (with brd/config.gin: the settings it ran with)."""
  out = pathlib.Path(to)
  if out.exists() and any(out.iterdir()) and not overwrite:
    raise UserError(f"--to {out} exists and is not empty (pass --overwrite to replace it)")
  loaded = resolve.load(model, mesh)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
  try:
    hf.export_dir(loaded.model, tmp, loaded.tokenizer, dtype=dtype)
    atomic_write_text(tmp / "brd" / "config.gin", operative_config)
    if out.exists():
      shutil.rmtree(out)
    tmp.rename(out)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp)
  return loaded
