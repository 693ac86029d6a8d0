"""Where the project's own files are: a leaf module (it imports nothing of brd_jax), so any layer
may ask for a path without importing the layers above it."""
from __future__ import annotations

import pathlib


def _config_dir() -> pathlib.Path:
  """The source tree's configs/ (editable installs), else the copy installed as brd_jax/configs."""
  here = pathlib.Path(__file__).resolve().parent
  source = here.parent / "configs"
  return source if (source / "experiments").is_dir() else here / "configs"


CONFIG_DIR = _config_dir()
MODELS_DIR = CONFIG_DIR / "models"
