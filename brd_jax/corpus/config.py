"""The `corpus` gin configurable, checked when built (no heavy imports: gin parsing stays fast)."""
from __future__ import annotations

import dataclasses

import gin

from brd_jax.corpus.split import SPLITTERS
from brd_jax.errors import UserError

# Paragraph-level versions of the C4 line rules (Raffel et al. 2020, sec. 2.2) and the Project
# Gutenberg licence text, matched lower-cased as substrings.
BOILERPLATE = ("lorem ipsum", "javascript", "cookie policy", "use cookies", "terms of use",
               "privacy policy", "all rights reserved", "click here", "project gutenberg", "{")


@gin.configurable("corpus")
@dataclasses.dataclass(frozen=True)
class CorpusConfig:
  """What `brd corpus` reads, what it keeps, and how the work is shared between processes."""
  inputs: tuple = ()               # files, dirs, globs; hf:DIR_OR_NAME[:split]; tfds:NAME[:split]
  format: str = "auto"             # auto | cc100 | text | wrapped | jsonl | parquet | hf | tfds
  text_field: str = "text"         # jsonl / parquet / hf / tfds
  id_field: str = ""               # document id field (default: source and position)
  tfds_data_dir: str = ""          # where tfds: inputs are prepared (default: TFDS's)
  from_tasks: tuple = ()           # NAME[:split] of evaluation tasks whose unlabeled inputs are
                                   # read too, one paragraph per example (the relaxed setting;
                                   # brd_jax/evaluation/task_corpus.py)
  # reading
  max_line_bytes: int = 1 << 20    # longer lines are skipped, counted
  max_replaced_fraction: float = 0.01   # invalid UTF-8 bytes replaced; above this the line is skipped
  # paragraph filters
  min_sentences: int = 2
  max_sentences: int = 64
  min_chars: int = 40
  max_chars: int = 20_000
  min_sentence_chars: int = 3      # no sentence shorter (splitter debris such as "1.")
  max_sentence_chars: int = 1_000  # no sentence longer (tables, lists without punctuation)
  min_alpha_ratio: float = 0.6     # letters / non-space characters
  require_terminal_punct: bool = True
  boilerplate: tuple = BOILERPLATE
  max_doc_repeat_fraction: float = 0.3  # a document with more repeated paragraphs is dropped
  splitter: str = "blingfire"      # pysbd | blingfire | syntok (see `brd bench split`)
  # deduplication
  exact_dedup: bool = True
  near_dedup: bool = True
  shingle_words: int = 3
  near_dup_threshold: float = 0.5
  minhash_perms: int = 64
  dedup_capacity: int = 5_000_000  # paragraphs the Bloom filters are sized for: memory is fixed
  bloom_error_rate: float = 1e-6   # by these two (~18 MB per filter, 15 filters), not the input
  seed: int = 1
  # decontamination: the evaluation tasks whose inputs `brd corpus` loads (as `brd eval` does;
  # add `bigbench:NAME` entries for the BIG-bench tasks a run evaluates), the n-gram length
  decontaminate: tuple = ("xnli", "rte", "cb", "pawsx", "boolq", "sst2")
  decontam_ngram: int = 13
  # output and work sharing
  max_paragraphs: int = 0          # keep only the first N paragraphs in input order (0: all)
  shard_paragraphs: int = 10_000   # paragraphs per output shard
  chunk_docs: int = 2_000          # input documents per resumable work chunk
  num_processes: int = 0           # 0: the JAX process count (1 without multi-host)
  process_index: int = -1          # -1: the JAX process index
  keep_parts: bool = False         # keep parts/ (per-process work) after the merge
  merge_wait_s: float = 3600.0     # object-store workdir: how long process 0 waits for the others

  def __post_init__(self):
    if self.splitter not in SPLITTERS:
      raise UserError(f"corpus.splitter={self.splitter!r}: choose one of {', '.join(SPLITTERS)}")
    for name in ("max_sentences", "max_chars", "shard_paragraphs", "chunk_docs", "decontam_ngram"):
      if getattr(self, name) < 1:
        raise UserError(f"corpus.{name}={getattr(self, name)!r}: must be >= 1")

  def fingerprint_fields(self) -> dict:
    """The settings that change the output (not how the work is shared)."""
    d = dataclasses.asdict(self)
    # from_tasks shows in the prepared `inputs` (brd_jax/evaluation/task_corpus.py)
    for k in ("num_processes", "process_index", "keep_parts", "chunk_docs", "merge_wait_s",
              "from_tasks"):
      d.pop(k)
    return d
