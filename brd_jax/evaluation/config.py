"""The `eval` gin configurable (no heavy imports: gin parsing stays fast)."""
from __future__ import annotations

import dataclasses

import gin


@gin.configurable("eval")
@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """What `brd eval` (and the pipeline's eval stage) scores, and how."""
  tasks: tuple = ("xnli", "rte", "cb", "pawsx", "boolq", "sst2")
  data_dir: str = ""             # folder, hf, hf:DIR, tfds[:DIR]; default $BRD_EVAL_DATA
  limit: int = 0                 # first N examples per task (0: all)
  num_fewshot: int = 0
  log_samples: bool = False      # samples_<task>.jsonl (per-document log-likelihoods)
  reference_model: str = ""      # a teacher sharing the tokenizer: CE / KL to it
  token_budget: int = 4096       # tokens per scoring batch
  chunk_chars: int = 200_000     # characters of requests per cache commit: what a kill can lose
