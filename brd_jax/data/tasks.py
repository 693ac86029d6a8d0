"""The training tasks `brd_ori` / `brd_ner` / `brd_qra` / `brd_skd` / `brd_tdist`, the Mixture
`brd_mix`, its ablations and the paper's baselines (task distillation, SKD alone). A behaviour
declared in a file (`behaviors/spec.py`) is one more task, `brd_<name>`, which a mixture joins by
name: `data.mixture = "brd_mix+brd_relation"` (mixture and task names joined by '+').

`register()` prepares the examples once (`prepare.py`: tokenised, in ArrayRecord shards under a
fingerprinted directory, reused while inputs and settings stay the same) and settles the
mixture's counts and rates; `dataset()` is this host's share of the mixture, read from its own
shards by Grain, packed and batched (`feed.py`). No TensorFlow here: importing it costs a host
~840 MB and ~9 s at every start. `seqio_tasks.register()` puts the same Tasks and Mixtures in
seqio's registries, for T5X-style use. `examples_by_task()` is the plain in-memory join (what
`brd export` writes).
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib

import jax

from brd_jax.behaviors import ledger
from brd_jax.corpus.paragraphs import paragraph_shards, read_paragraphs
from brd_jax.data import formatting
from brd_jax.data.config import DataConfig
from brd_jax.errors import UserError

LEDGER_TASKS = ("brd_ori", "brd_ner", "brd_qra", "brd_skd")  # the corpus and the teacher's reading
TASKS = LEDGER_TASKS + ("brd_tdist",)  # + task distillation (`data.task_distill_dir`)
# Mixture name -> its tasks: the paper's BRD mixture, its ablations (without NER, without QRA,
# corpus only: FURTHER) and the baselines it is compared with or stacked on (task distillation,
# SKD: the teacher's responses to the paragraphs).
MIXTURES = {
    "brd_mix": LEDGER_TASKS,
    "brd_mix_no_ner": ("brd_ori", "brd_qra", "brd_skd"),
    "brd_mix_no_qra": ("brd_ori", "brd_ner", "brd_skd"),
    "brd_corpus_only": ("brd_ori",),
    "brd_task_distill": ("brd_tdist",),
    "brd_mix_task_distill": LEDGER_TASKS + ("brd_tdist",),
    "brd_skd_only": ("brd_ori", "brd_skd"),
}


def mixture_tasks(mixture: str, tasks=TASKS) -> tuple:
  """The tasks of `data.mixture`: a name from MIXTURES, or mixture / task names joined by '+'."""
  if mixture in MIXTURES:
    return MIXTURES[mixture]
  out: list[str] = []
  for part in mixture.split("+"):
    got = MIXTURES.get(part) or ((part,) if part in tasks else None)
    if got is None:
      raise UserError(f"data.mixture={mixture!r}: {part!r} is neither a mixture "
                      f"({', '.join(MIXTURES)}) nor a task ({', '.join(tasks)})")
    out += [t for t in got if t not in out]
  return tuple(out)


@dataclasses.dataclass
class Registered:
  mixture: str
  counts: dict[str, int]           # task -> number of examples
  rates: dict[str, float]          # task -> mixing rate actually used
  tokenizer: object
  prepared: pathlib.Path | None = None  # the prepared shards' directory
  manifest: dict = dataclasses.field(default_factory=dict)
  # task -> (tokens its examples hold as trained: EOS added, each cut to data.seq_len; tokens
  # the cut drops). The unique text a run's tokens seen are counted against.
  tokens: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)


def _check_kd(tokenizer, cfg: DataConfig, named: tuple) -> None:
  """Refuses inputs KD cannot use: no top-k, another tokenizer, task distillation."""
  if cfg.export_dir:
    raise UserError("train.kd_weight > 0 needs the ledger's top-k logprobs, which an export does "
                    "not hold; train from data.paragraphs_dir + data.ledger_dir")
  manifest = ledger.read_manifest(cfg.ledger_dir) if cfg.ledger_dir else None
  if not manifest or not manifest.get("topk"):
    raise UserError("train.kd_weight > 0 needs a ledger written with top-k logprobs "
                    "(brd generate --topk N); this one has none")
  if manifest.get("tokenizer") != tokenizer.fingerprint():
    raise UserError("train.kd_weight > 0 needs a student with the teacher's tokenizer (ledger "
                    f"{manifest.get('tokenizer')}, student {tokenizer.fingerprint()}); "
                    "KD across tokenizers is not supported")
  if cfg.task_distill_dir and "brd_tdist" in named:
    raise UserError("train.kd_weight > 0 with task distillation: the teacher's top-k is stored "
                    "for the ledger's readings only; use a mixture without brd_tdist")


def check(cfg: DataConfig) -> None:
  """Fails fast (before any model is built) on missing or empty data directories."""
  if cfg.export_dir:
    from brd_jax.data import exported
    exported.read_info(cfg.export_dir)
    return
  if not cfg.paragraphs_dir:
    raise UserError("data.paragraphs_dir is not set (bind it in gin: data.paragraphs_dir = '...')")
  paragraph_shards(cfg.paragraphs_dir)
  if cfg.ledger_dir:
    ledger.shards(cfg.ledger_dir, required=True)
  if cfg.shard_paragraphs < 1:
    raise UserError(f"data.shard_paragraphs={cfg.shard_paragraphs}: must be at least 1")


def examples_by_task(cfg: DataConfig) -> dict[str, list[dict]]:
  """Every task's text examples, joined in memory (the reference the prepared shards equal)."""
  check(cfg)
  if cfg.export_dir:
    from brd_jax.data import exported
    return exported.read_texts(cfg.export_dir, cfg)
  paragraphs = read_paragraphs(cfg.paragraphs_dir)
  readings = formatting.read_ledger(cfg.ledger_dir) if cfg.ledger_dir else \
      formatting.Readings({})
  from brd_jax.behaviors import task_distill
  return {
      "brd_ori": formatting.original_examples(paragraphs),
      **{f"brd_{b}": formatting.examples(paragraphs, readings, b, cfg.sep, cfg.level)
         for b in ("ner", "qra", "skd", *readings.declared)},
      "brd_tdist": task_distill.read(cfg.task_distill_dir) if cfg.task_distill_dir else [],
  }


def register(tokenizer, cfg: DataConfig | None = None, kd: bool = False, workdir=None,
             progress: bool = False) -> Registered:
  """Prepares the examples (once), registers every Task and Mixture, and returns the configured
  mixture with its counts and rates.

  kd: token-level examples carrying the teacher's top-k (see `formatting.token_examples`)."""
  from brd_jax.data import prepare
  cfg = cfg or DataConfig()
  # a behaviour declared in a file is a task only once its ledger is read: any brd_* passes here
  named = mixture_tasks(cfg.mixture, TASKS + tuple(
      t for t in cfg.mixture.split("+") if t.startswith("brd_")))
  if "brd_tdist" in named and not (cfg.task_distill_dir or cfg.export_dir):
    raise UserError(f"data.mixture={cfg.mixture} mixes task distillation (brd_tdist), but "
                    "data.task_distill_dir is not set")
  check(cfg)
  if kd:
    _check_kd(tokenizer, cfg, named)
  prepared = prepare.prepare(cfg, tokenizer, kd, prepare.prepared_root(cfg, workdir),
                             progress=progress)
  manifest = prepare.read_manifest(prepared)
  empty = {"shards": [], "counts": [], "examples": 0, "tokens": [0, 0]}
  infos = {t: manifest["tasks"].get(t, empty) for t in (*TASKS, *manifest["tasks"])}
  counts = {t: info["examples"] for t, info in infos.items()}
  unknown = set(cfg.rates or {}) - set(counts)
  if unknown:
    raise UserError(f"data.rates names unknown tasks {sorted(unknown)}; tasks: "
                    f"{', '.join(counts)}")
  chosen = mixture_tasks(cfg.mixture, tuple(counts))
  used = mixture_rates(chosen, counts, cfg.rates)
  if not used:
    raise UserError(f"mixture {cfg.mixture} has no examples (counts: {counts})")
  for t in chosen:
    if not counts[t] and t != "brd_skd":
      logging.warning("task %s has no examples; %s mixes without it", t, cfg.mixture)
  tokens = {t: tuple(infos[t]["tokens"]) for t in used}
  return Registered(cfg.mixture, counts, used, tokenizer, prepared, manifest, tokens)


def mixture_rates(tasks: tuple, counts: dict, rates: dict | None) -> dict[str, float]:
  """task -> rate (data.rates, else the example count) of the tasks that have examples: an empty
  task would end a mixture, as seqio's ends on its first empty dataset."""
  out = {t: float((rates or {}).get(t, counts[t])) for t in tasks if counts.get(t)}
  return {t: r for t, r in out.items() if r > 0}


def dataset(reg: Registered, batch_size: int, cfg: DataConfig | None = None):
  """This host's endless iterator of packed batches (dicts of int32 [batch / hosts, seq_len],
  and the teacher's top-k with KD): see `feed.Feed`, whose state() a checkpoint keeps."""
  from brd_jax.data.feed import Feed
  cfg = cfg or DataConfig()
  n_hosts, host = jax.process_count(), jax.process_index()
  if batch_size % n_hosts:
    raise UserError(f"train.batch_size={batch_size} is not divisible by {n_hosts} hosts")
  tok = reg.tokenizer
  bos = tok.bos_id if tok.bos_id is not None else (tok.eos_id or 0)
  return Feed(reg.prepared, reg.manifest, reg.rates, batch_size, cfg, bos, host, n_hosts)
