"""seqio Tasks `brd_ori` / `brd_ner` / `brd_qra` / `brd_skd` / `brd_tdist`, Mixture `brd_mix`, its
ablations and the paper's baselines (task distillation, SKD alone). A behaviour declared in a file
(`behaviors/spec.py`) is one more task, `brd_<name>`, which a mixture joins by name:
`data.mixture = "brd_mix+brd_relation"` (mixture and task names joined by '+').

`register()` reads the gin-bound directories once, builds the formatted texts in memory, and
(re)registers the Tasks and Mixtures under their fixed names; `dataset()` returns this host's
share of the mixture, tokenized, packed by seqio's DecoderFeatureConverter and batched.
"""
from __future__ import annotations

import dataclasses
import logging

import jax

from brd_jax.behaviors import ledger
from brd_jax.corpus.paragraphs import paragraph_shards, read_paragraphs
from brd_jax.data import formatting
from brd_jax.data._tf import seqio, tf
from brd_jax.data.config import DataConfig
from brd_jax.data.vocab import TokenizerVocabulary
from brd_jax.errors import UserError

class _QuietUncachedWarning(logging.Filter):
  """seqio warns that uncached function sources reshuffle poorly on restart; our restarts skip
  to the exact batch instead, so the warning does not apply."""

  def filter(self, record):
    return "uncached FunctionDataset" not in record.getMessage()


logging.getLogger("absl").addFilter(_QuietUncachedWarning())

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
  vocabulary: TokenizerVocabulary
  kd_table: tuple | None = None    # (ids [N, k], logprobs [N, k]) rows named by teacher_slot
  # task -> (tokens its examples hold as trained: EOS added, each cut to data.seq_len; tokens
  # the cut drops). The unique text a run's tokens seen are counted against.
  tokens: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)


def _token_counts(examples: list[dict], encode, seq_len: int, eos: bool) -> tuple[int, int]:
  """(kept, cut) tokens of examples, as seqio trims them (EOS appended after the trim)."""
  lengths = [len(e["targets"]) if "targets" in e else len(encode(e["text"])) + eos
             for e in examples]
  kept = sum(min(n, seq_len) for n in lengths)
  return kept, sum(lengths) - kept


def _task(name: str, examples: list[dict], vocab: TokenizerVocabulary, shuffle_buffer: int):
  ids = [e["id"] for e in examples]
  texts = [e["text"] for e in examples]

  def dataset_fn(split, shuffle_files, seed=None):
    del split, shuffle_files, seed  # one in-memory split; shuffling happens in the Task
    return tf.data.Dataset.from_tensor_slices({"id": ids, "targets": texts})

  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(dataset_fn, splits=["train"],
                                      num_input_examples={"train": len(examples)}),
      preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
      output_features={"targets": seqio.Feature(vocab, add_eos=True, dtype=tf.int32)},
      shuffle_buffer_size=shuffle_buffer)


def _token_task(name: str, examples: list[dict], vocab: TokenizerVocabulary,
                shuffle_buffer: int):
  """A task of pre-tokenized examples with a per-token `teacher_slot` (KD training)."""
  import numpy as np

  def dataset_fn(split, shuffle_files, seed=None):
    del split, shuffle_files, seed

    def gen():
      for e in examples:
        yield {"id": e["id"], "targets": np.asarray(e["targets"], np.int32),
               "teacher_slot": np.asarray(e["teacher_slot"], np.int32)}
    return tf.data.Dataset.from_generator(gen, output_signature={
        "id": tf.TensorSpec([], tf.string), "targets": tf.TensorSpec([None], tf.int32),
        "teacher_slot": tf.TensorSpec([None], tf.int32)})

  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(dataset_fn, splits=["train"],
                                      num_input_examples={"train": len(examples)}),
      preprocessors=[],
      output_features={
          "targets": seqio.Feature(vocab, add_eos=False, dtype=tf.int32),
          "teacher_slot": seqio.Feature(seqio.PassThroughVocabulary(size=0), add_eos=False,
                                        dtype=tf.int32)},
      shuffle_buffer_size=shuffle_buffer)


def _kd_examples(tokenizer, cfg: DataConfig):
  """Token examples of every task and the top-k table; refuses a ledger KD cannot use."""
  manifest = ledger.read_manifest(cfg.ledger_dir) if cfg.ledger_dir else None
  if not manifest or not manifest.get("topk"):
    raise UserError("train.kd_weight > 0 needs a ledger written with top-k logprobs "
                    "(brd generate --topk N); this one has none")
  if manifest.get("tokenizer") != tokenizer.fingerprint():
    raise UserError("train.kd_weight > 0 needs a student with the teacher's tokenizer (ledger "
                    f"{manifest.get('tokenizer')}, student {tokenizer.fingerprint()}); "
                    "KD across tokenizers is not supported")
  paragraphs = read_paragraphs(cfg.paragraphs_dir)
  readings = formatting.read_ledger(cfg.ledger_dir)
  table = formatting.KDTable(int(manifest["topk"]))
  eos = tokenizer.eos_id if tokenizer.eos_id is not None else 1
  by_task = {t: formatting.token_examples(paragraphs, readings, t, tokenizer.encode, eos,
                                          cfg.seq_len, table, cfg.sep, cfg.level)
             for t in LEDGER_TASKS + tuple(f"brd_{b}" for b in readings.declared)}
  by_task["brd_tdist"] = []  # the teacher's top-k exists for generated readings only
  if cfg.task_distill_dir and "brd_tdist" in mixture_tasks(cfg.mixture, tuple(by_task)):
    raise UserError("train.kd_weight > 0 with task distillation: the teacher's top-k is stored "
                    "for the ledger's readings only; use a mixture without brd_tdist")
  return by_task, table.arrays()


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


def examples_by_task(cfg: DataConfig) -> dict[str, list[dict]]:
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


def register(tokenizer, cfg: DataConfig | None = None, kd: bool = False) -> Registered:
  """Registers every Task and Mixture; returns the configured mixture with its counts and rates.

  kd: token-level examples carrying the teacher's top-k (see `formatting.token_examples`)."""
  cfg = cfg or DataConfig()
  # a behaviour declared in a file is a task only once its ledger is read: any brd_* passes here
  named = mixture_tasks(cfg.mixture, TASKS + tuple(
      t for t in cfg.mixture.split("+") if t.startswith("brd_")))
  if kd and cfg.export_dir:
    raise UserError("train.kd_weight > 0 needs the ledger's top-k logprobs, which an export does "
                    "not hold; train from data.paragraphs_dir + data.ledger_dir")
  if "brd_tdist" in named and not (cfg.task_distill_dir or cfg.export_dir):
    raise UserError(f"data.mixture={cfg.mixture} mixes task distillation (brd_tdist), but "
                    "data.task_distill_dir is not set")
  vocab = TokenizerVocabulary(tokenizer)
  kd_table = None
  if kd:
    check(cfg)
    by_task, kd_table = _kd_examples(tokenizer, cfg)
  else:
    by_task = examples_by_task(cfg)
  for name, examples in by_task.items():
    (_token_task if kd else _task)(name, examples, vocab, cfg.shuffle_buffer)
  counts = {t: len(e) for t, e in by_task.items()}
  unknown = set(cfg.rates or {}) - set(by_task)
  if unknown:
    raise UserError(f"data.rates names unknown tasks {sorted(unknown)}; tasks: "
                    f"{', '.join(by_task)}")
  chosen = mixture_tasks(cfg.mixture, tuple(by_task))
  used = {}
  for mix, tasks in {**MIXTURES, cfg.mixture: chosen}.items():
    # An empty task would end the whole mixture (seqio stops on the first empty dataset).
    rates = {t: float((cfg.rates or {}).get(t, counts[t])) for t in tasks if counts[t]}
    rates = {t: r for t, r in rates.items() if r > 0}
    seqio.MixtureRegistry.remove(seqio_name(mix))
    if rates:
      seqio.MixtureRegistry.add(seqio_name(mix), list(rates.items()))
    if mix == cfg.mixture:
      used = rates
  if not used:
    raise UserError(f"mixture {cfg.mixture} has no examples (counts: {counts})")
  for t in chosen:
    if not counts[t] and t != "brd_skd":
      logging.warning("task %s has no examples; %s mixes without it", t, cfg.mixture)
  tokens = {t: _token_counts(by_task[t], vocab.encode, cfg.seq_len, eos=not kd) for t in used}
  return Registered(cfg.mixture, counts, used, vocab, kd_table, tokens)


def seqio_name(mixture: str) -> str:
  """A configured mixture's seqio name: its own when in MIXTURES, else one that no Task has
  (`brd_ori` alone is a Task's name) and without '+', which seqio's names do not take."""
  return mixture if mixture in MIXTURES else "mix#" + mixture.replace("+", "#")


def _kd_decoder_features(ds, lengths, pack: bool, bos: int):
  """What seqio's DecoderFeatureConverter makes of `targets`, plus `teacher_slot` packed with
  it (the converter keeps only its own features; seqio's packer packs both alike)."""
  if pack:
    ds = seqio.utils.trim_and_pack_dataset(ds, lengths)
  else:
    ds = seqio.utils.trim_and_pad_dataset(ds, lengths)

  def convert(x):
    seg = x.get("targets_segment_ids")
    out = {"decoder_target_tokens": x["targets"],
           "decoder_input_tokens": seqio.utils.make_autoregressive_inputs(
               x["targets"], sequence_id=seg, bos_id=bos),
           "decoder_loss_weights": tf.cast(tf.not_equal(x["targets"], 0), tf.int32),
           "teacher_slot": x["teacher_slot"]}
    if seg is not None:
      out["decoder_segment_ids"] = seg
      out["decoder_positions"] = x["targets_positions"]
    return out
  return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


def dataset(reg: Registered, batch_size: int, cfg: DataConfig | None = None,
            skip_batches: int = 0) -> tf.data.Dataset:
  """This host's endless stream of packed batches (dicts of int32 [batch, seq_len]).

  The order depends only on the seed, the data and the host count, so skipping the batches a
  checkpoint already consumed resumes at exactly the next example.
  """
  cfg = cfg or DataConfig()
  n_hosts, host = jax.process_count(), jax.process_index()
  if batch_size % n_hosts:
    raise UserError(f"train.batch_size={batch_size} is not divisible by {n_hosts} hosts")
  lengths = {"targets": cfg.seq_len}
  if reg.kd_table is not None:
    lengths["teacher_slot"] = cfg.seq_len
  ds = seqio.get_mixture_or_task(seqio_name(reg.mixture)).get_dataset(
      sequence_length=lengths, split="train", shuffle=True, seed=cfg.seed, num_epochs=None,
      shard_info=seqio.ShardInfo(host, n_hosts) if n_hosts > 1 else None, use_cached=False)
  tok = reg.vocabulary.tokenizer
  bos = tok.bos_id if tok.bos_id is not None else (tok.eos_id or 0)
  if reg.kd_table is None:
    ds = seqio.DecoderFeatureConverter(pack=cfg.pack, bos_id=bos)(ds, lengths)
  else:
    ds = _kd_decoder_features(ds, lengths, cfg.pack, bos)
  ds = ds.batch(batch_size // n_hosts, drop_remainder=True)
  if skip_batches:
    ds = ds.skip(skip_batches)
  return ds.prefetch(2)
