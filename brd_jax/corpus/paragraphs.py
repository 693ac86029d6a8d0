"""The `paragraphs/` format: the corpus stage's output, what generation and training read.

A directory (local or gs://) of JSONL shards and a manifest:
- shards are `shard-NNNNN.jsonl` (5 digits, from 00000, `corpus.shard_paragraphs` records each),
  read in name order; any other `*.jsonl` not starting with "." counts too, so a hand-written
  directory works. Each appears whole (temp, fsync, rename; one object on gs://);
- a record is one JSON object a line with `id` (str) and `sentences` (list of str) or `text`
  (str), at least one of them non-empty; one without `sentences` reads as the single sentence
  `text`. The stage writes `id`, `doc_id`, `text`, `sentences`, in that order;
- `id` names the paragraph in the ledger and in training examples, so it is unique within a
  directory. The stage's ids are `paragraph_id(text)`: 16 hex digits of sha1(text), which also
  key its exact deduplication, so the stage never writes two records with one text;
- `manifest.json`, written after every shard: a directory without one is no finished corpus.
  It holds the `fingerprint` of inputs, settings and evaluation texts (a re-run with the same
  one does nothing), `kept` (= the number of records), `sentences`, `shards`, and what was
  read, dropped and repaired.
"""
from __future__ import annotations

import hashlib
import json
import pathlib

from brd_jax.errors import UserError
from brd_jax.io_utils import as_path, atomic_write_text, iter_jsonl, write_jsonl

DIR = "paragraphs"  # the format's directory under a corpus workdir
MANIFEST = "manifest.json"


def paragraph_id(text: str) -> str:
  """The content hash that names a paragraph (and keys exact deduplication)."""
  return hashlib.sha1(text.encode()).hexdigest()[:16]


def shard_name(k: int) -> str:
  return f"shard-{k:05d}.jsonl"


def paragraph_shards(paragraphs_dir) -> list[pathlib.Path]:
  """The shards of a `paragraphs/` directory, in order; an error when there are none."""
  d = as_path(paragraphs_dir)
  files = sorted((p for p in d.glob("*.jsonl") if not p.name.startswith(".")),
                 key=lambda p: p.name) if d.is_dir() else []
  if not files:
    raise UserError(f"paragraphs directory {d} holds no *.jsonl shards")
  return files


def read_paragraphs(paragraphs_dir) -> list[dict]:
  """Every paragraph, in shard order, each with `sentences`."""
  return list(iter_paragraphs(paragraphs_dir))


def iter_paragraphs(paragraphs_dir):
  """Every paragraph, in shard order, each with `sentences` (the one reader of the format)."""
  for path in paragraph_shards(paragraphs_dir):
    yield from iter_shard(path)


def iter_shard(path):
  """The paragraphs of one shard, in order, each with `sentences`."""
  for lineno, rec in iter_jsonl(path):
    if not isinstance(rec, dict) or "id" not in rec or not (rec.get("sentences")
                                                             or rec.get("text")):
      raise UserError(f"{path}:{lineno}: paragraph records need 'id' and 'sentences' or 'text'")
    if not rec.get("sentences"):
      rec["sentences"] = [rec["text"]]
    yield rec


def read_manifest(workdir) -> dict | None:
  """WORKDIR/paragraphs/manifest.json; None while there is no finished corpus."""
  try:
    return json.loads((as_path(workdir) / DIR / MANIFEST).read_text())
  except (OSError, ValueError):
    return None


def write_manifest(paragraphs_dir, manifest: dict) -> None:
  """Last, after every shard: the manifest is what makes the directory count."""
  atomic_write_text(as_path(paragraphs_dir) / MANIFEST, json.dumps(manifest, indent=1) + "\n")


class ShardWriter:
  """Writes records as numbered shards of `per_shard` records each, each shard whole."""

  def __init__(self, paragraphs_dir, per_shard: int):
    self.dir, self.per_shard = as_path(paragraphs_dir), per_shard
    self.buffer: list[dict] = []
    self.shards = self.records = self.sentences = 0

  def add(self, record: dict) -> None:
    self.buffer.append(record)
    self.records += 1
    self.sentences += len(record["sentences"])
    if len(self.buffer) == self.per_shard:
      self.flush()

  def flush(self) -> None:
    """The buffered records as the next shard (nothing when there are none)."""
    if self.buffer:
      write_jsonl(self.dir / shard_name(self.shards), self.buffer)
      self.shards, self.buffer = self.shards + 1, []
