"""Reading a `brd export` (see `export.py`): its export.json and each task's training texts, as
`tasks.examples_by_task` reads them from `data.export_dir`."""
from __future__ import annotations

import json

from brd_jax.data.config import DataConfig
from brd_jax.errors import UserError
from brd_jax.io_utils import as_path

INFO = "export.json"
TEXT_TASKS = ("brd_ori", "brd_ner", "brd_qra", "brd_skd", "brd_tdist")


def read_info(export_dir) -> dict:
  d = as_path(export_dir)
  try:
    return json.loads((d / INFO).read_text())
  except (OSError, ValueError):
    raise UserError(f"data.export_dir={str(d)!r}: not a brd export (no readable {INFO}; "
                    "write one with brd export)") from None


def read_texts(export_dir, cfg: DataConfig) -> dict[str, list[dict]]:
  """Each task's training examples from an export, as `tasks.examples_by_task` builds them."""
  import pyarrow.parquet as pq
  info = read_info(export_dir)
  if (info["sep"], info["level"]) != (cfg.sep, cfg.level):
    raise UserError(f"data.export_dir was exported with data.sep={info['sep']!r}, "
                    f"data.level={info['level']!r}; this run has {cfg.sep!r}, {cfg.level!r} "
                    "(export again with these settings)")
  out = {t: [] for t in TEXT_TASKS}
  for t in info.get("texts") or TEXT_TASKS:
    files = sorted((as_path(export_dir) / "texts" / t).glob("part-*.parquet"))
    out[t] = [r for f in files for r in pq.read_table(str(f)).to_pylist()]
  return out
