"""Paragraph-level (and sentence-level) training texts from `paragraphs/` and the teacher `ledger/`.

Pure Python, no TensorFlow: the seqio Tasks in `tasks.py` wrap these generators. A paragraph's
BRD text interleaves each sentence with the teacher's reading of it,
`s1 <sep> NER(s1) <sep> s2 <sep> NER(s2) ...`; a sentence without a valid teacher output keeps just
the sentence, so a partly generated ledger still trains.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Iterator

from brd_jax.errors import UserError

BEHAVIORS = ("ner", "qra", "skd")


def jsonl_files(directory: str | pathlib.Path, what: str) -> list[pathlib.Path]:
  d = pathlib.Path(directory)
  if not d.is_dir():
    raise UserError(f"{what} directory not found: {d}")
  files = sorted(p for p in d.rglob("*.jsonl") if not p.name.startswith("."))
  if not files:
    raise UserError(f"{what} directory {d} holds no *.jsonl shards")
  return files


def _read_jsonl(path: pathlib.Path) -> Iterator[dict]:
  with open(path, "rb") as f:
    for lineno, raw in enumerate(f, 1):
      if not raw.strip():
        continue
      try:
        yield json.loads(raw.decode("utf-8"))
      except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}:{lineno}: not a UTF-8 JSON line ({type(e).__name__})") from None


def read_paragraphs(directory) -> list[dict]:
  """All paragraphs, in shard order; each needs `id` and `sentences` (or `text`)."""
  out = []
  for path in jsonl_files(directory, "paragraphs"):
    for rec in _read_jsonl(path):
      if "id" not in rec or not (rec.get("sentences") or rec.get("text")):
        raise UserError(f"{path}: paragraph records need 'id' and 'sentences' or 'text'")
      if not rec.get("sentences"):
        rec["sentences"] = [rec["text"]]
      out.append(rec)
  return out


def read_ledger(directory) -> dict[tuple[str, int, str], dict]:
  """(paragraph_id, sentence_index, behavior) -> the last valid record for it."""
  out = {}
  for path in jsonl_files(directory, "ledger"):
    for rec in _read_jsonl(path):
      if not rec.get("valid", True) or rec.get("behavior") not in BEHAVIORS:
        continue
      try:
        key = (rec["paragraph_id"], int(rec["sentence_index"]), rec["behavior"])
      except (KeyError, TypeError, ValueError):
        raise UserError(f"{path}: ledger records need paragraph_id, sentence_index, behavior")
      out[key] = rec
  return out


def reading_text(rec: dict) -> str:
  """The teacher's reading of one sentence as training text: its raw output, else `parsed`."""
  text = (rec.get("text") or "").strip()
  if text:
    return text
  parsed = rec.get("parsed")
  if isinstance(parsed, list):
    return "\n".join(json.dumps(p, ensure_ascii=False) if not isinstance(p, str) else p
                     for p in parsed)
  return json.dumps(parsed, ensure_ascii=False) if parsed else ""


def example_id(*parts) -> str:
  return hashlib.sha1("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def original_examples(paragraphs: list[dict]) -> list[dict]:
  """D_ORI: the raw paragraphs."""
  return [{"id": p["id"], "text": p.get("text") or " ".join(p["sentences"])} for p in paragraphs]


def behavior_examples(paragraphs: list[dict], ledger: dict, behavior: str, sep: str = "\n",
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
    for i, s in enumerate(p["sentences"]):
      rec = ledger.get((p["id"], i, behavior))
      reading = reading_text(rec) if rec else ""
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


def skd_examples(paragraphs: list[dict], ledger: dict) -> list[dict]:
  """Sequence-level KD: the teacher's own responses (prompt + response), when the ledger has them."""
  out = []
  for p in paragraphs:
    for i, _ in enumerate(p["sentences"]):
      rec = ledger.get((p["id"], i, "skd"))
      if rec and (rec.get("text") or "").strip():
        out.append({"id": example_id(p["id"], i, "skd"),
                    "text": (rec.get("prompt") or "") + rec["text"].strip()})
  return out
