"""The ledger: one JSON record per attempt at a (sentence, behaviour) unit, in atomic shards.

Keys (content-derived, so outputs never depend on batch, bucket or host count):
- `sentence_key` = hash(behaviour, unit text, context): what training joins sentences on;
- `unit` = hash(sentence_key, template id, teacher fingerprint, decoding parameters): the work;
- `key` = unit + attempt: one record. A unit is done when a committed shard holds a valid
  record of it, or `max_attempts` records.
Shards are `shard-pPPPP-SSSSSS.jsonl`, written whole (temp, fsync, rename) by one process each;
anything else in the directory (temp files, torn lines) is skipped with a warning. After each
shard its key index, `shard-pPPPP-SSSSSS.index.json`, is committed: the fields a restart counts
(unit, attempt, valid, behavior, error, n_tokens) as columns, with the shard's CRC-32. A restart
reads those instead of parsing every record's text; a shard whose index is missing or does not
match its bytes (killed between the two writes, edited by hand) is read whole instead.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import pathlib
import re
from typing import Iterator

import numpy as np

from brd_jax.errors import UserError
from brd_jax.io_utils import as_path, atomic_write_text, iter_jsonl, write_jsonl

log = logging.getLogger(__name__)
_SHARD = re.compile(r"^shard-p(\d{4})-(\d{6})\.jsonl$")
REQUIRED = ("key", "unit", "sentence_key", "attempt", "behavior", "valid")


def _h(*parts, n: int = 24) -> str:
  return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:n]


def sentence_key(behavior: str, text: str, context: str = "") -> str:
  # = _h("s", behavior, text, context), spelled out: a restart keys millions of sentences
  return hashlib.sha256(f"s\x1f{behavior}\x1f{text}\x1f{context}".encode()).hexdigest()[:24]


def unit_key(skey: str, template_id: str, teacher: str, decode: dict) -> str:
  return _h("u", skey, template_id, teacher, json.dumps(decode, sort_keys=True))


def unit_keyer(template_id: str, teacher: str, decode: dict):
  """`unit_key(skey, template_id, teacher, decode)` as a function of skey alone (the rest
  encoded once)."""
  tail = "\x1f".join(map(str, (template_id, teacher, json.dumps(decode, sort_keys=True))))
  head = "u\x1f"

  def key(skey: str) -> str:
    return hashlib.sha256(f"{head}{skey}\x1f{tail}".encode()).hexdigest()[:24]
  return key


def record_key(unit: str, attempt: int) -> str:
  return f"{unit}-{attempt}"


def seed_of(key: str) -> int:
  """The sampling seed of an attempt: from its key alone."""
  return int(key.split("-")[0][:8], 16) ^ int(key.rsplit("-", 1)[1])


# ---- top-k logprobs, stored compactly: int32 ids and float16 logprobs, base64 -----------------
def pack_topk(top: list[list[tuple[int, float]]]) -> dict:
  k = len(top[0]) if top else 0
  ids = np.asarray([[i for i, _ in row] for row in top], np.int32).reshape(-1, k)
  lps = np.asarray([[lp for _, lp in row] for row in top], np.float16).reshape(-1, k)
  return {"k": k, "ids": base64.b64encode(ids.tobytes()).decode(),
          "logprobs": base64.b64encode(lps.tobytes()).decode()}


def unpack_topk(d: dict) -> tuple[np.ndarray, np.ndarray]:
  """(ids int32 [T, k], logprobs float32 [T, k])."""
  k = d["k"]
  ids = np.frombuffer(base64.b64decode(d["ids"]), np.int32).reshape(-1, k)
  lps = np.frombuffer(base64.b64decode(d["logprobs"]), np.float16).reshape(-1, k)
  return ids, lps.astype(np.float32)


def pack_tokens(tokens: list[int]) -> str:
  return base64.b64encode(np.asarray(tokens, np.int32).tobytes()).decode()


def unpack_tokens(s: str) -> list[int]:
  return np.frombuffer(base64.b64decode(s), np.int32).tolist()


# ---- writing ----------------------------------------------------------------------------------
class Writer:
  """Buffers one process's records and commits them as whole shards."""

  def __init__(self, ledger_dir, process_index: int):
    self.dir, self.proc = as_path(ledger_dir), process_index
    self.dir.mkdir(parents=True, exist_ok=True)
    # an empty gs:// prefix does not exist even after mkdir
    names = [p.name for p in self.dir.iterdir()] if self.dir.exists() else []
    seqs = [int(m.group(2)) for name in names
            if (m := _SHARD.match(name)) and int(m.group(1)) == process_index]
    self.seq = max(seqs, default=-1) + 1
    self.buffer: list[dict] = []

  def add(self, record: dict) -> None:
    self.buffer.append(record)

  def commit(self) -> int:
    """Writes the buffered records as one shard, then its index; returns how many."""
    if not self.buffer:
      return 0
    path = self.dir / f"shard-p{self.proc:04d}-{self.seq:06d}.jsonl"
    n = write_jsonl(path, self.buffer)
    index = {f: [r.get(f) for r in self.buffer] for f in INDEX_FIELDS}
    atomic_write_text(index_path(path), json.dumps({"crc32": _crc32(path), **index}))
    self.seq, self.buffer = self.seq + 1, []
    return n


# ---- reading ----------------------------------------------------------------------------------
def shards(ledger_dir, required: bool = False) -> list[pathlib.Path]:
  """The committed shards, in order (`required`: an error when there are none)."""
  d = as_path(ledger_dir)
  if not d.is_dir():
    raise UserError(f"ledger directory not found: {d}")
  out, other = [], []
  for p in sorted(d.iterdir(), key=lambda p: p.name):
    (out if _SHARD.match(p.name) else other).append(p)
  skipped = [p.name for p in other if p.suffix == ".jsonl" or p.name.endswith(".tmp")]
  if skipped:
    log.warning("ledger %s: ignoring %d uncommitted or foreign file(s), e.g. %s", d, len(skipped),
                skipped[0])
  if required and not out:
    raise UserError(f"ledger directory {d} holds no committed shards")
  return out


def read(ledger_dir) -> Iterator[dict]:
  """Every committed record, in shard order; torn or foreign lines are skipped with a warning."""
  for path in shards(ledger_dir):
    yield from read_shard(path)


def read_shard(path) -> Iterator[dict]:
  """One shard's well-formed records, in order."""
  bad = 0
  for _, rec in iter_jsonl(path, skip_bad=True):
    if not isinstance(rec, dict) or any(k not in rec for k in REQUIRED):
      bad += 1
      continue
    yield rec
  if bad:
    log.warning("ledger %s: skipped %d torn or malformed line(s)", path, bad)


INDEX_FIELDS = ("unit", "attempt", "valid", "behavior", "error", "n_tokens")


def _crc32(path) -> int:
  """Of the shard's bytes (~1 s a GB): an index describes exactly the shard it sits beside."""
  import zlib
  crc = 0
  with as_path(path).open("rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      crc = zlib.crc32(block, crc)
  return crc


def index_path(shard: pathlib.Path) -> pathlib.Path:
  return shard.with_name(shard.name[:-len(".jsonl")] + ".index.json")


def _shard_index(path) -> dict | None:
  """A shard's committed index when it describes the shard as it is; None otherwise."""
  try:
    index = json.loads(index_path(path).read_text())
  except (OSError, ValueError):
    return None
  ok = isinstance(index, dict) and index.get("crc32") == _crc32(path) and all(
      isinstance(index.get(f), list) and len(index[f]) == len(index["unit"])
      for f in INDEX_FIELDS)
  return index if ok else None


def index_columns(ledger_dir) -> Iterator[dict]:
  """Per committed shard, in order, INDEX_FIELDS -> a list over its records: from the shard's key
  index, or by reading its records when it has no usable one."""
  for path in shards(ledger_dir):
    index = _shard_index(path)
    if index is None:
      recs = list(read_shard(path))
      index = {f: [r.get(f) for r in recs] for f in INDEX_FIELDS}
    yield index


def read_index(ledger_dir) -> Iterator[dict]:
  """Every committed record's INDEX_FIELDS, in shard order (see `index_columns`)."""
  for index in index_columns(ledger_dir):
    for row in zip(*(index[f] for f in INDEX_FIELDS)):
      yield dict(zip(INDEX_FIELDS, row))


def select(records, prefer: dict | None = None) -> dict[str, dict]:
  """sentence_key -> the valid record training uses: one of the `prefer`red generation (a
  manifest's template ids and teacher) when there is one, else the lowest attempt first seen."""
  def rank(r):
    pref = 0
    if prefer:
      pref = int(r.get("template") not in prefer.get("templates", {}).values() or
                 r.get("teacher") != prefer.get("teacher"))
    return (pref, r["attempt"])
  out: dict[str, dict] = {}
  for r in records:
    if r.get("valid") is not True:
      continue
    cur = out.get(r["sentence_key"])
    if cur is None or rank(r) < rank(cur):
      out[r["sentence_key"]] = r
  return out


def read_manifest(ledger_dir) -> dict | None:
  try:
    return json.loads((as_path(ledger_dir) / "manifest.json").read_text())
  except (OSError, ValueError):
    return None
