"""The prepared tasks and the mixtures in seqio's registries (T5X-style use: `seqio.get_mixture_or_
task("brd_mix").get_dataset(...)`). Training does not go through here: it reads the same shards
with Grain (`feed.py`) and never imports TensorFlow."""
from __future__ import annotations

import logging

from brd_jax.data import tasks
from brd_jax.data._tf import seqio, tf
from brd_jax.data.prepare import read_shard
from brd_jax.data.vocab import TokenizerVocabulary


class _QuietUncachedWarning(logging.Filter):
  """seqio warns that uncached function sources reshuffle poorly on restart; these sources are
  the prepared shards, already built once, so it does not apply."""

  def filter(self, record):
    return "uncached FunctionDataset" not in record.getMessage()


logging.getLogger("absl").addFilter(_QuietUncachedWarning())


def seqio_name(mixture: str) -> str:
  """A configured mixture's seqio name: its own when in MIXTURES, else one that no Task has
  (`brd_ori` alone is a Task's name) and without '+', which seqio's names do not take."""
  return mixture if mixture in tasks.MIXTURES else "mix#" + mixture.replace("+", "#")


def _task(name: str, reg: tasks.Registered, vocab: TokenizerVocabulary, shuffle_buffer: int):
  """One prepared task as a seqio Task of `targets` (tokenised, EOS added, cut to seq_len)."""
  info = reg.manifest["tasks"].get(name, {"shards": [], "examples": 0})
  files = [reg.prepared / name / f for f in info["shards"]]

  def dataset_fn(split, shuffle_files, seed=None):
    del split, shuffle_files, seed

    def gen():
      for f in files:
        for ex in read_shard(f):
          yield {"targets": ex["targets"]}
    return tf.data.Dataset.from_generator(
        gen, output_signature={"targets": tf.TensorSpec([None], tf.int32)})

  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(dataset_fn, splits=["train"],
                                      num_input_examples={"train": info["examples"]}),
      preprocessors=[],
      output_features={"targets": seqio.Feature(vocab, add_eos=False, dtype=tf.int32)},
      shuffle_buffer_size=shuffle_buffer)


def register(reg: tasks.Registered, rates: dict | None = None, shuffle_buffer: int = 10_000):
  """(Re)registers every prepared task and every mixture (the configured one too) in seqio;
  returns the configured mixture's seqio name."""
  vocab = TokenizerVocabulary(reg.tokenizer)
  for name in reg.counts:
    _task(name, reg, vocab, shuffle_buffer)
  chosen = tasks.mixture_tasks(reg.mixture, tuple(reg.counts))
  for mix, members in {**tasks.MIXTURES, reg.mixture: chosen}.items():
    seqio.MixtureRegistry.remove(seqio_name(mix))
    got = tasks.mixture_rates(members, reg.counts, rates)
    if got:
      seqio.MixtureRegistry.add(seqio_name(mix), list(got.items()))
  return seqio_name(reg.mixture)
