"""The `eval` gin configurable, checked when built (no heavy imports: gin parsing stays fast)."""
from __future__ import annotations

import dataclasses

import gin

from brd_jax.errors import UserError
from brd_jax.evaluation import tasks as tasks_lib


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
  divergence_limit: int = 0      # CE / KL on the first N examples per task only (0: all scored)
  token_budget: int = 4096       # tokens per scoring batch
  chunk_chars: int = 200_000     # characters of requests per cache commit: what a kill can lose

  def __post_init__(self):
    for t in self.tasks:
      if not tasks_lib.is_known(t):
        raise UserError(f"eval.tasks: unknown or not yet supported task {t!r} "
                        f"(supported: {', '.join(tasks_lib.TASKS)}, bigbench:NAME)")
    if not self.tasks:
      raise UserError("eval.tasks is empty")
    if (self.num_fewshot < 0 or self.limit < 0 or self.divergence_limit < 0
        or self.token_budget <= 0 or self.chunk_chars <= 0):
      raise UserError("eval.num_fewshot, eval.limit and eval.divergence_limit must be >= 0, "
                      "eval.token_budget and "
                      "eval.chunk_chars > 0")
