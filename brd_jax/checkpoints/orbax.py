"""Orbax training checkpoints: params, optimizer state, data position and metadata per step.

Layout: WORKDIR/checkpoints/<step>/{params,opt,data,meta} plus WORKDIR/tokenizer/. Parameters
are their own item so `brd convert` and `--model WORKDIR` restore them without knowing the
optimizer. Restoring takes target shardings, so a run may resume on a different mesh shape.
"""
from __future__ import annotations

import json
import pathlib

import jax

from brd_jax.errors import UserError
from brd_jax.io_utils import as_path, is_url, local_copy


def _ocp():
  import orbax.checkpoint as ocp
  return ocp


def checkpoint_dir(workdir: str | pathlib.Path):
  """Accepts WORKDIR or WORKDIR/checkpoints: a pathlib.Path, or for gs:// an etils epath.Path
  (Orbax's own path type, which reaches object stores through its own client)."""
  if is_url(workdir):
    from etils import epath
    p = epath.Path(str(workdir))
  else:
    p = pathlib.Path(workdir).absolute()
  return p if p.name == "checkpoints" and not (p / "checkpoints").is_dir() else p / "checkpoints"


class Checkpoints:
  """A CheckpointManager with the project's items; async saves, keep-last-K."""

  def __init__(self, workdir, every: int = 1000, keep: int = 3, async_save: bool = True,
               read_only: bool = False, ocdbt: bool = True):
    ocp = _ocp()
    self.dir = checkpoint_dir(workdir)
    if read_only:
      options = ocp.CheckpointManagerOptions(read_only=True, save_interval_steps=0,
                                             max_to_keep=None, create=False)
    else:
      options = ocp.CheckpointManagerOptions(
          save_interval_steps=every, max_to_keep=keep, create=True,
          enable_async_checkpointing=async_save)
    handlers = {"params": ocp.StandardCheckpointHandler(use_ocdbt=ocdbt),
                "opt": ocp.StandardCheckpointHandler(use_ocdbt=ocdbt),
                "data": ocp.JsonCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    self.mngr = ocp.CheckpointManager(self.dir, options=options, item_handlers=handlers)

  def latest_step(self) -> int | None:
    return self.mngr.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.mngr.all_steps())

  def reload(self) -> None:
    """Re-reads the step list (after a checkpoint directory was moved aside)."""
    self.mngr.reload()

  def save(self, step: int, state: dict, data: dict, meta: dict, force: bool = False) -> bool:
    ocp = _ocp()
    args = ocp.args.Composite(
        params=ocp.args.StandardSave(state["params"]),
        opt=ocp.args.StandardSave({"step": state["step"], "opt": state["opt"]}),
        data=ocp.args.JsonSave(data), meta=ocp.args.JsonSave(meta))
    return self.mngr.save(step, args=args, force=force)

  def restore(self, step: int, abstract_state: dict) -> tuple[dict, dict]:
    """abstract_state: ShapeDtypeStructs with the target shardings. Returns (state, data)."""
    ocp = _ocp()
    r = self.mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_state["params"]),
        opt=ocp.args.StandardRestore({"step": abstract_state["step"],
                                      "opt": abstract_state["opt"]}),
        data=ocp.args.JsonRestore()))
    return {"step": r.opt["step"], "params": r.params, "opt": r.opt["opt"]}, dict(r.data)

  def restore_params(self, step: int, abstract_params) -> dict:
    ocp = _ocp()
    r = self.mngr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params)))
    return r.params

  def meta(self, step: int | None = None) -> dict:
    step = self.latest_step() if step is None else step
    path = self.dir / str(step) / "meta" / "metadata"
    if not path.exists():
      raise UserError(f"{self.dir}: checkpoint step {step} has no metadata")
    return json.loads(path.read_text())

  def wait(self) -> None:
    self.mngr.wait_until_finished()

  def close(self) -> None:
    self.mngr.close()


def abstract(tree, shardings):
  """ShapeDtypeStructs carrying the target shardings (what Orbax restores into)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def load_model(workdir, mesh=None, overrides: dict | None = None, step: int | None = None):
  """A trained student as (Decoder, ModelConfig, Tokenizer | None, step)."""
  from brd_jax import sharding as shd
  from brd_jax import tokenizer as tkz
  from brd_jax.models import build
  from brd_jax.models.config import ModelConfig
  ck = Checkpoints(workdir, read_only=True)
  step = ck.latest_step() if step is None else step
  if step is None:
    raise UserError(f"{ck.dir}: no finished checkpoint")
  cfg = ModelConfig.from_dict(ck.meta(step)["model"])
  if overrides:
    cfg = cfg.replace(**overrides)
  mesh = mesh or shd.make_mesh((1, 1, 1), jax.devices()[:1])
  template = build.abstract(cfg)
  params_abs, bind = build.functional(template)
  params = ck.restore_params(step, abstract(params_abs, build.pure_shardings(cfg, mesh)))
  tok_dir = as_path(str(ck.dir.parent / "tokenizer"))
  tok = tkz.from_dir(local_copy(tok_dir)) if tok_dir.is_dir() else None
  return bind(params), cfg, tok, step
