"""What a test needs from outside the repository, and what happens when it is missing.

Evaluation data is found through one setting, `$BRD_EVAL_DATA` (default: `../shared/data/eval`
beside the repository). Without it a test skips with the reason on a user's fresh clone, and fails
under `BRD_STRICT=1` (CI sets it). A registry asset that cannot be fetched fails the test, unless
`BRD_OFFLINE=1` asks to skip, or the registry answered that it no longer serves the pinned
release (`assets.Withdrawn`): then the test skips, strict or not, with BLOCKED and the registry's
answer as its reason, since no change to the project can bring the release back (a copy given with
`brd assets fetch NAME --archive FILE` makes it run again).
"""
import os
import pathlib

import pytest


def eval_data() -> pathlib.Path:
  from brd_jax.evaluation import tasks
  d = tasks.default_data_dir()
  if not (d / "rte").is_dir():
    if os.environ.get("BRD_STRICT") == "1":
      pytest.fail(f"BRD_STRICT=1 and no evaluation data at {d} (set BRD_EVAL_DATA)")
    pytest.skip(f"no evaluation data at {d} (set BRD_EVAL_DATA)")
  return d


def asset(name: str) -> pathlib.Path:
  from brd_jax import assets
  from brd_jax.errors import UserError
  try:
    return assets.fetch(name, quiet=True)
  except assets.Withdrawn as e:
    pytest.skip(f"BLOCKED outside the project: {e}")
  except UserError as e:
    if os.environ.get("BRD_OFFLINE") == "1":
      pytest.skip(f"BRD_OFFLINE=1 and asset {name} is not cached: {e}")
    raise
