"""The `data` gin configurable (TF-free, so `brd --help` and gin parsing stay fast)."""
from __future__ import annotations

import dataclasses

import gin


@gin.configurable("data")
@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the training texts come from and how they are mixed and packed."""
  paragraphs_dir: str | None = None
  ledger_dir: str | None = None
  task_distill_dir: str | None = None  # the teacher's answers to task inputs (task brd_tdist)
  export_dir: str | None = None    # a `brd export` directory: its texts instead of the two above
  mixture: str = "brd_mix"
  sep: str = "\n"                  # between a sentence and the teacher's reading of it
  level: str = "paragraph"         # paragraph | sentence (the paper's ablation)
  rates: dict | None = None        # task -> rate; default: proportional to example counts
  seq_len: int = 512
  pack: bool = True
  shuffle_buffer: int = 10_000
  seed: int = 0
  # Prepared examples (`data/prepare.py`): built once per inputs and settings under
  # prepared_dir/<fingerprint> (default WORKDIR/prepared), shard_paragraphs paragraphs a shard.
  prepared_dir: str | None = None
  shard_paragraphs: int = 4096
