"""Paragraph-level (and sentence-level) training texts from `paragraphs/` and the teacher `ledger/`.

Pure Python, no TensorFlow: `prepare.py` runs these on each chunk of paragraphs with the readings
its join found, and `tasks.examples_by_task` on everything at once. A paragraph's
BRD text interleaves each sentence with the teacher's reading of it,
`s1 <sep> NER(s1) <sep> s2 <sep> NER(s2) ...`; a sentence without a valid teacher output keeps just
the sentence, so a partly generated ledger still trains. Paragraphs are read by the format's
reader (`corpus.paragraphs.read_paragraphs`, importable from here), readings by the ledger's:
records are joined to sentences by `sentence_key` (so a sentence repeated in several paragraphs,
read once, is used in each) and turned into text by `parse.render`.
"""
from __future__ import annotations

import dataclasses
import hashlib

from brd_jax.behaviors import ledger as ledger_lib
from brd_jax.behaviors import parse, spec
from brd_jax.corpus.paragraphs import read_paragraphs  # noqa: F401  (this module's input)
from brd_jax.errors import UserError


@dataclasses.dataclass
class Readings:
  """The valid teacher readings training uses: sentence_key -> record."""
  records: dict
  context_sentences: int = 0     # as generated (from the ledger manifest)
  declared: tuple = ()           # behaviours declared in files (tasks brd_<name>)

  def get(self, behavior: str, sentences: list[str], i: int) -> dict | None:
    return self.records.get(sentence_unit_key(behavior, sentences, i, self.context_sentences))


def sentence_unit_key(behavior: str, sentences: list[str], i: int, context: int) -> str:
  """The ledger key of sentence i read with `context` sentences before it."""
  ctx = " ".join(sentences[max(0, i - context):i]) if context else ""
  return ledger_lib.sentence_key(behavior, sentences[i], ctx)


def reading_keys(paragraph: dict, behavior: str, context: int) -> list[str]:
  """Every ledger key the examples of `behavior` look up in a paragraph (what a join needs)."""
  sents = paragraph["sentences"]
  if spec.get(behavior).unit == "paragraph":
    return [ledger_lib.sentence_key(behavior, paragraph.get("text") or " ".join(sents), "")]
  return [sentence_unit_key(behavior, sents, i, context) for i in range(len(sents))]


def read_ledger(directory) -> Readings:
  """The ledger's committed, valid records, one per sentence key (see `ledger.select`)."""
  ledger_lib.shards(directory, required=True)
  manifest, context, declared = ledger_settings(directory)
  return Readings(ledger_lib.select(ledger_lib.read(directory), manifest), context, declared)


def ledger_settings(directory) -> tuple[dict, int, tuple]:
  """(manifest, context sentences, behaviours declared in files) of a ledger; the declared ones
  are registered, so they render as their files say."""
  manifest = ledger_lib.read_manifest(directory) or {}
  spec.from_manifest(manifest)
  declared = tuple(b for b in manifest.get("behavior_specs") or {} if b not in spec.BUILTINS)
  return manifest, int(manifest.get("context_sentences", 0)), declared


def example_id(*parts) -> str:
  return hashlib.sha1("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def original_examples(paragraphs: list[dict]) -> list[dict]:
  """D_ORI: the raw paragraphs."""
  return [{"id": p["id"], "text": p.get("text") or " ".join(p["sentences"])} for p in paragraphs]


def behavior_examples(paragraphs: list[dict], readings: Readings, behavior: str, sep: str = "\n",
                      level: str = "paragraph") -> list[dict]:
  """D_NER / D_QRA: sentences interleaved with the teacher's readings.

  level='paragraph' gives one example per paragraph (the paper's better variant); 'sentence' one
  example per sentence that has a reading. Paragraphs without any reading are left out.
  """
  if level not in ("paragraph", "sentence"):
    raise UserError(f"data.level={level!r}: must be 'paragraph' or 'sentence'")
  out = []
  for p in paragraphs:
    parts, any_reading = [], False
    sents = p["sentences"]
    for i, s in enumerate(sents):
      rec = readings.get(behavior, sents, i)
      reading = parse.render(rec) if rec else ""
      if level == "sentence":
        if reading:
          out.append({"id": example_id(p["id"], i, behavior), "text": f"{s}{sep}{reading}"})
        continue
      parts.append(s)
      if reading:
        parts.append(reading)
        any_reading = True
    if level == "paragraph" and any_reading:
      out.append({"id": example_id(p["id"], behavior), "text": sep.join(parts)})
  return out


def paragraph_examples(paragraphs: list[dict], readings: Readings, behavior: str = "skd",
                       sep: str = "\n") -> list[dict]:
  """A paragraph-unit behaviour (SKD: sequence-level KD): the paragraph followed by the teacher's
  reading of it."""
  out = []
  for p in paragraphs:
    text = p.get("text") or " ".join(p["sentences"])
    rec = readings.records.get(ledger_lib.sentence_key(behavior, text, ""))
    reading = parse.render(rec) if rec else ""
    if reading:
      out.append({"id": example_id(p["id"], behavior), "text": f"{text}{sep}{reading}"})
  return out


def examples(paragraphs: list[dict], readings: Readings, behavior: str, sep: str = "\n",
             level: str = "paragraph") -> list[dict]:
  """The training texts of one behaviour (task brd_<behavior>), by the unit it reads. SKD keeps
  its newline separator whatever data.sep says (as it always has)."""
  if spec.get(behavior).unit == "paragraph":
    return paragraph_examples(paragraphs, readings, behavior, "\n" if behavior == "skd" else sep)
  return behavior_examples(paragraphs, readings, behavior, sep, level)


# ---- token-level examples for knowledge distillation -------------------------------------------
class KDTable:
  """The teacher's top-k logprobs of every behaviour token used in training, one row per token.
  Examples name rows by `teacher_slot`: 0 is padding (seqio's packer takes 0 for padding, so a
  real token never has it), 1 is "a token without a teacher", 2.. are taught tokens."""
  NONE = 1

  def __init__(self, k: int):
    import numpy as np
    self.k, self._np = k, np
    self._ids, self._lps, self.rows = [np.zeros((2, k), np.int32)], \
        [np.zeros((2, k), np.float32)], 2

  def add(self, record: dict) -> list[int]:
    """Slots of a record's generated tokens (aligned with `ledger.unpack_tokens`)."""
    ids, lps = ledger_lib.unpack_topk(record["topk"])
    if ids.shape[1] != self.k:
      raise UserError(f"ledger record {record['key']}: top-{ids.shape[1]}, expected top-{self.k}")
    first = self.rows
    self._ids.append(ids)
    self._lps.append(lps)
    self.rows += len(ids)
    return list(range(first, self.rows))

  def arrays(self):
    np = self._np
    return np.concatenate(self._ids), np.concatenate(self._lps)


def _reading_tokens(rec: dict, encode, table: KDTable) -> tuple[list[int], list[int]]:
  """The teacher's own tokens (so its top-k line up) with their slots; records stored without
  top-k contribute their text, untaught."""
  if rec.get("tokens") and rec.get("topk"):
    toks = ledger_lib.unpack_tokens(rec["tokens"])
    return toks, table.add(rec)
  ids = encode((rec.get("text") or "").strip())
  return ids, [KDTable.NONE] * len(ids)


def token_examples(paragraphs: list[dict], readings: Readings, task: str, encode, eos: int,
                   max_len: int, table: KDTable, sep: str = "\n",
                   level: str = "paragraph") -> list[dict]:
  """Like the text examples, as token ids with a `teacher_slot` per token (KD training).

  The behaviour parts are the teacher's generated tokens themselves (their raw text, not
  `parse.render`), because its top-k logprobs exist for exactly those tokens.
  """
  sep_ids = encode(sep)
  out = []
  none = KDTable.NONE

  def emit(ex_id, ids, slots):
    ids, slots = ids[:max_len - 1] + [eos], slots[:max_len - 1] + [none]
    out.append({"id": ex_id, "targets": ids, "teacher_slot": slots})

  for p in paragraphs:
    sents = p["sentences"]
    text = p.get("text") or " ".join(sents)
    if task == "brd_ori":
      ids = encode(text)
      emit(p["id"], ids, [none] * len(ids))
      continue
    behavior = task[len("brd_"):]
    if spec.get(behavior).unit == "paragraph":
      rec = readings.records.get(ledger_lib.sentence_key(behavior, text, ""))
      if rec:
        t, s = _reading_tokens(rec, encode, table)
        head = encode(text) + sep_ids
        emit(example_id(p["id"], behavior), head + t, [none] * len(head) + s)
      continue
    ids, slots, any_reading = [], [], False
    for i, s in enumerate(sents):
      rec = readings.get(behavior, sents, i)
      s_ids = encode(s)
      if level == "sentence":
        if rec:
          t, sl = _reading_tokens(rec, encode, table)
          emit(example_id(p["id"], i, behavior), s_ids + sep_ids + t,
               [none] * (len(s_ids) + len(sep_ids)) + sl)
        continue
      if ids:
        ids, slots = ids + sep_ids, slots + [none] * len(sep_ids)
      ids, slots = ids + s_ids, slots + [none] * len(s_ids)
      if rec:
        t, sl = _reading_tokens(rec, encode, table)
        ids, slots = ids + sep_ids + t, slots + [none] * len(sep_ids) + sl
        any_reading = True
    if level == "paragraph" and any_reading:
      emit(example_id(p["id"], behavior), ids, slots)
  return out
