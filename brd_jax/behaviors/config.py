"""The `generate` gin configurable, checked when built (no heavy imports: gin parsing stays
fast)."""
from __future__ import annotations

import dataclasses

import gin

from brd_jax.behaviors import spec, templates
from brd_jax.errors import UserError


@gin.configurable("generate")
@dataclasses.dataclass(frozen=True)
class GenerateConfig:
  """The teacher's reading: who reads, with which prompts and decoding, and how work is shared."""
  teacher: str = ""                # a --model spec (HF dir, .gguf, asset:NAME, training dir)
  dtype: str = ""                  # teacher weights and compute: '' as loaded (float32), bfloat16
  # names (ner, qra, skd) or behaviour files (.yaml / .json, see behaviors/spec.py); held as
  # the behaviours' names once checked
  behaviors: tuple = ("ner", "qra")
  templates: dict | None = None    # behaviour -> template id; default: its first style
  context_sentences: int = 0       # earlier sentences of the paragraph shown as context
  min_sentence_words: int = 3      # shorter sentences ("Hooray!", "CHAPTER X.") are not read
  max_new_tokens: int = 160
  temperature: float = 0.0         # 0 = greedy
  top_k: int = 0
  top_p: float = 1.0
  stop: tuple = ()
  seed: int = 0
  max_attempts: int = 2            # an invalid unit is tried again up to this many times in all
  retry_temperature: float = 0.7   # a retry of a greedy unit samples (greedy would repeat itself)
  topk: int = 0                    # store the teacher's top-k logprobs of every generated token
  batch_size: int = 32             # decode slots
  # The engine's three throughput switches; none changes a greedy output (nor the ledger key).
  continuous_batching: bool = True  # refill a finished row's slot instead of waiting for the batch
  prefix_cache: bool = True        # prefill the shared few-shot preamble once per run
  speculate: int = -1              # prompt-lookup draft tokens per step; -1: 4 on GPU/TPU up to
                                   # 64 slots, else 0 (past ~64 rows a 13B verify step turns
                                   # compute-bound; on a 2-core CPU it costs ~2x a plain step)
  commit_every: int = 64           # records per committed shard (lost at most on a kill)
  limit: int = 0                   # stop after this many units in this run (0: all)
  num_processes: int = 0           # 0: the JAX process count
  process_index: int = -1          # -1: the JAX process index

  def __post_init__(self):
    if isinstance(self.behaviors, str):
      raise UserError(f"generate.behaviors = {self.behaviors!r}: give a list, e.g. ['ner', 'qra']")
    names = tuple(spec.load(b).name for b in self.behaviors)
    if len(set(names)) != len(names):
      raise UserError(f"generate.behaviors names a behaviour twice: {list(self.behaviors)}")
    object.__setattr__(self, "behaviors", names)
    chosen = templates.chosen(self.templates, self.behaviors)
    for b in self.behaviors:  # unknown or mismatched templates fail before the teacher loads
      templates.get(chosen[b], b)
    if self.max_attempts < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
      raise UserError("generate.max_attempts, batch_size and max_new_tokens must be >= 1")
    if self.speculate < -1:
      raise UserError(f"generate.speculate={self.speculate}: must be >= 0, or -1 (by backend)")
    if self.dtype not in ("", "float32", "bfloat16"):
      raise UserError(f"generate.dtype={self.dtype!r}: must be '', 'float32' or 'bfloat16'")

  def decode(self) -> dict:
    """The decoding parameters that shape outputs (part of every unit key)."""
    return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
            "top_k": self.top_k, "top_p": self.top_p, "stop": list(self.stop), "seed": self.seed}
