"""Paragraph-level (and sentence-level) training texts from `paragraphs/` and the teacher `ledger/`.

Pure Python, no TensorFlow: the seqio Tasks in `tasks.py` wrap these generators. A paragraph's
BRD text interleaves each sentence with the teacher's reading of it,
`s1 <sep> NER(s1) <sep> s2 <sep> NER(s2) ...`; a sentence without a valid teacher output keeps just
the sentence, so a partly generated ledger still trains. Paragraphs are read by the corpus stage's
reader, readings by the ledger's: records are joined to sentences by `sentence_key` (so a sentence
repeated in several paragraphs, read once, is used in each) and turned into text by
`parse.render`.
"""
from __future__ import annotations

import dataclasses
import hashlib

from brd_jax.behaviors import ledger as ledger_lib
from brd_jax.behaviors import parse
from brd_jax.corpus.stage import read_paragraphs as _read_paragraphs
from brd_jax.errors import UserError

BEHAVIORS = ("ner", "qra", "skd")


@dataclasses.dataclass
class Readings:
  """The valid teacher readings training uses: sentence_key -> record."""
  records: dict
  context_sentences: int = 0     # as generated (from the ledger manifest)

  def get(self, behavior: str, sentences: list[str], i: int) -> dict | None:
    c = self.context_sentences
    ctx = " ".join(sentences[max(0, i - c):i]) if c else ""
    return self.records.get(ledger_lib.sentence_key(behavior, sentences[i], ctx))


def read_paragraphs(directory) -> list[dict]:
  """All paragraphs, in shard order; each needs `id` and `sentences` (or `text`)."""
  return list(_read_paragraphs(directory))


def check_paragraphs(directory) -> None:
  """Fails fast when the directory is missing or holds no shards."""
  import pathlib  # pylint: disable=import-outside-toplevel
  d = pathlib.Path(directory)
  if not d.is_dir():
    raise UserError(f"paragraphs directory not found: {d}")
  if not any(p for p in d.glob("*.jsonl") if not p.name.startswith(".")):
    raise UserError(f"paragraphs directory {d} holds no *.jsonl shards")


def read_ledger(directory) -> Readings:
  """The ledger's committed, valid records, one per sentence key (see `ledger.select`)."""
  if not ledger_lib.shards(directory):
    raise UserError(f"ledger directory {directory} holds no committed shards")
  manifest = ledger_lib.read_manifest(directory) or {}
  return Readings(ledger_lib.select(ledger_lib.read(directory), manifest),
                  int(manifest.get("context_sentences", 0)))


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


def skd_examples(paragraphs: list[dict], readings: Readings) -> list[dict]:
  """Sequence-level KD: the paragraph followed by the teacher's own response to it."""
  out = []
  for p in paragraphs:
    text = p.get("text") or " ".join(p["sentences"])
    rec = readings.records.get(ledger_lib.sentence_key("skd", text, ""))
    if rec and parse.render(rec):
      out.append({"id": example_id(p["id"], "skd"), "text": f"{text}\n{parse.render(rec)}"})
  return out
