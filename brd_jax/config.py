"""gin helpers: --gin_file / --gin parsing, validation and the operative-config dump.

Every run setting lives in gin. Commands call `parse(gin_files, bindings)` once, before anything is
compiled, so a typo in a binding fails in about a second with the binding named.
"""
from __future__ import annotations

import logging
import os
import pathlib

import gin

from brd_jax.errors import UserError
from brd_jax.io_utils import as_path, atomic_write_text
from brd_jax.paths import CONFIG_DIR


class _NoGinPathProbes(logging.Filter):
  """gin probes every search path for `include`d files and logs each miss as an error."""

  def filter(self, record):
    return not record.getMessage().startswith("Path not found:")


logging.getLogger().addFilter(_NoGinPathProbes())  # gin logs through the root logger


def _resolve_gin_file(name: str) -> str:
  """Accepts a path, or a name relative to configs/ with or without `.gin`."""
  p = pathlib.Path(name)
  if p.exists():
    return str(p)
  for cand in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.gin"):
    if cand.exists():
      return str(cand)
  raise UserError(f"gin file not found: {name} (looked in . and {CONFIG_DIR})")


def register_configurables() -> None:
  """Imports the modules whose gin configurables a command may bind (cheap: no TF, no torch)."""
  # pylint: disable=unused-import
  from brd_jax import sharding  # noqa: F401
  from brd_jax.corpus import config as _cc  # noqa: F401
  from brd_jax.behaviors import config as _bc  # noqa: F401
  from brd_jax.evaluation import config as _ec  # noqa: F401
  from brd_jax import experiment  # noqa: F401
  from brd_jax.inference import complete  # noqa: F401
  from brd_jax.data import config as _dc  # noqa: F401
  from brd_jax.training import config as _tc  # noqa: F401
  from brd_jax.inference import chat  # noqa: F401
  from brd_jax.models import config as _mc  # noqa: F401
  from brd_jax.planning import plan as _pl  # noqa: F401


def parse(gin_files=(), bindings=(), finalize: bool = True) -> None:
  """Parses gin files then bindings; raises UserError naming the bad binding."""
  register_configurables()
  gin.clear_config()
  files = [_resolve_gin_file(f) for f in gin_files or ()]
  gin.add_config_file_search_path(str(CONFIG_DIR))
  for f in files:
    try:
      gin.parse_config_file(f)
    except Exception as e:  # gin raises several exception types; all are bad input here
      raise UserError(f"invalid gin file {f}: {_one_line(e)}") from None
  for b in bindings or ():
    try:
      gin.parse_config(b)
    except Exception as e:
      raise UserError(f"invalid gin binding {b!r}: {_one_line(e)}") from None
  if finalize:
    gin.finalize()


def _one_line(e: Exception) -> str:
  msg = str(e).strip().splitlines()
  return msg[0] if msg else type(e).__name__


def operative_config() -> str:
  """The resolved config: every binding the run used (all bindings before anything ran)."""
  return gin.operative_config_str() or gin.config_str()


def write_operative_config(workdir: str | os.PathLike) -> pathlib.Path:
  """Writes `operative_config()` atomically to WORKDIR/config.gin."""
  out = as_path(workdir) / "config.gin"
  out.parent.mkdir(parents=True, exist_ok=True)
  atomic_write_text(out, operative_config())
  return out
