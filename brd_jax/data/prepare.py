"""Training examples built once: paragraphs/ + ledger/ (or an export, or task distillation) ->
every task's examples, tokenised, in ArrayRecord shards under a content-fingerprinted directory.

The sentence-key join never holds the ledger in memory: valid records and the paragraphs' key
requests are partitioned by key hash into spill files, each partition is joined alone, and its
readings are regrouped by paragraph chunk. A chunk of `data.shard_paragraphs` paragraphs is then
formatted by `formatting` (the code the in-memory path runs) and written as one shard per task.
Every step is a function of the inputs, so a run killed anywhere and run again writes the same
shards; a finished directory is renamed into place whole, its manifest inside.

Layout: ROOT/<fingerprint>/manifest.json and ROOT/<fingerprint>/<task>/shard-CCCCC.array_record.
A record is one example: int32 [n, n_taught, k], int32 targets[n] (EOS included, cut to seq_len),
then for KD int32 positions[n_taught], int32 ids[n_taught, k], float16 logprobs[n_taught, k].
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import time

import numpy as np

from brd_jax.behaviors import ledger
from brd_jax.corpus.paragraphs import iter_paragraphs, paragraph_shards
from brd_jax.data import formatting
from brd_jax.data.config import DataConfig
from brd_jax.errors import UserError
from brd_jax.io_utils import (atomic_write_text, content_digest, dir_fingerprint, file_lock,
                              is_url, rmtree)

log = logging.getLogger(__name__)
FORMAT = 1
MANIFEST = "manifest.json"
SPILL_BYTES = 128 << 20  # ledger bytes per join partition (a partition's records are in memory)
_ARRAY_RECORD_OPTIONS = "group_size:1"  # one record a chunk: random access reads one example


# ---- records ----------------------------------------------------------------------------------
def encode_example(targets, kd: tuple | None = None) -> bytes:
  """One example's bytes; kd = (positions [m], ids [m, k], logprobs [m, k]) of taught tokens."""
  t = np.asarray(targets, np.int32)
  if kd is None:
    return np.asarray([len(t), 0, 0], np.int32).tobytes() + t.tobytes()
  pos, ids, lps = kd
  return (np.asarray([len(t), len(pos), ids.shape[1]], np.int32).tobytes() + t.tobytes()
          + np.asarray(pos, np.int32).tobytes() + np.asarray(ids, np.int32).tobytes()
          + np.asarray(lps, np.float16).tobytes())


def decode_example(raw: bytes) -> dict:
  """{"targets"} and, for KD, {"positions", "ids", "logprobs"} of the taught tokens."""
  n, m, k = np.frombuffer(raw, np.int32, 3)
  out = {"targets": np.frombuffer(raw, np.int32, n, 12)}
  if k:
    at = 12 + 4 * n
    out["positions"] = np.frombuffer(raw, np.int32, m, at)
    out["ids"] = np.frombuffer(raw, np.int32, m * k, at + 4 * m).reshape(m, k)
    out["logprobs"] = np.frombuffer(raw, np.float16, m * k, at + 4 * m * (1 + k)).reshape(m, k)
  return out


def read_shard(path) -> list[dict]:
  """Every example of one shard, in order (tests and inspection; training reads by index)."""
  from array_record.python import array_record_module as ar
  r = ar.ArrayRecordReader(str(path))
  try:
    return [decode_example(b) for b in r.read_all()]
  finally:
    r.close()


# ---- where, and whether already done ----------------------------------------------------------
def fingerprint(cfg: DataConfig, tokenizer, kd: bool) -> str:
  """Everything the prepared examples depend on (the mixture and its rates are not: arms that
  mix differently share one prepared set)."""
  man = ledger.read_manifest(cfg.ledger_dir) if cfg.ledger_dir else None
  sources = {k: dir_fingerprint(getattr(cfg, k)) if getattr(cfg, k) else None
             for k in ("paragraphs_dir", "ledger_dir", "task_distill_dir")}
  if cfg.export_dir:
    from brd_jax.data import exported
    sources["export"] = exported.read_info(cfg.export_dir)["fingerprint"]
  return content_digest(FORMAT, sources, man, tokenizer.fingerprint(), cfg.seq_len, cfg.sep,
                        cfg.level, kd, cfg.shard_paragraphs)


def read_manifest(directory) -> dict | None:
  try:
    return json.loads((pathlib.Path(directory) / MANIFEST).read_text())
  except (OSError, ValueError):
    return None


def prepared_root(cfg: DataConfig, workdir=None) -> pathlib.Path:
  """data.prepared_dir; else WORKDIR/prepared for a local workdir; else this machine's cache
  ($XDG_CACHE_HOME or ~/.cache, /brd_jax/prepared): a workdir on object storage keeps its
  checkpoints there, and its prepared examples, read by index, on a local disk."""
  if cfg.prepared_dir:
    if is_url(cfg.prepared_dir):
      raise UserError(f"data.prepared_dir={cfg.prepared_dir}: prepared shards are read by index "
                      "from a local or mounted POSIX file system (a disk, NFS, Filestore); give "
                      "its path")
    return pathlib.Path(cfg.prepared_dir)
  if workdir is not None and not is_url(workdir):
    return pathlib.Path(workdir) / "prepared"
  cache = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(cache) / "brd_jax" / "prepared"


def prepare(cfg: DataConfig, tokenizer, kd: bool, root, progress: bool = True,
            partitions: int | None = None) -> pathlib.Path:
  """The prepared directory of these inputs and settings, built unless it exists already.

  One process builds (a file lock); the others wait and then find the manifest."""
  root = pathlib.Path(root)
  fp = fingerprint(cfg, tokenizer, kd)
  out = root / fp
  if read_manifest(out):
    return out
  with file_lock(root / f".{fp}.lock"):
    if read_manifest(out):
      return out
    tmp = root / f".{fp}.partial"
    rmtree(tmp)  # a killed build left it; its shards are rebuilt, which gives the same bytes
    t0 = time.perf_counter()
    manifest = _Builder(cfg, tokenizer, kd, tmp, progress, partitions).build()
    manifest.update(fingerprint=fp, seconds=round(time.perf_counter() - t0, 1))
    rmtree(tmp / "spill")
    atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out)
  log.info("prepared %s in %.1f s", out, manifest["seconds"])
  return out


# ---- building ---------------------------------------------------------------------------------
class _Shards:
  """One task's shard writer: shard c holds chunk c's examples, in paragraph order."""

  def __init__(self, d: pathlib.Path):
    self.dir, self.files, self.counts = d, [], []
    d.mkdir(parents=True, exist_ok=True)
    self.tokens = [0, 0]  # kept, cut

  def write(self, chunk: int, records: list[bytes]) -> None:
    from array_record.python import array_record_module as ar
    name = f"shard-{chunk:05d}.array_record"
    w = ar.ArrayRecordWriter(str(self.dir / name), _ARRAY_RECORD_OPTIONS)
    for r in records:
      w.write(r)
    w.close()
    self.files.append(name)
    self.counts.append(len(records))


class _Builder:
  def __init__(self, cfg: DataConfig, tokenizer, kd: bool, out: pathlib.Path, progress: bool,
               partitions: int | None):
    self.cfg, self.tok, self.kd, self.out, self.progress = cfg, tokenizer, kd, out, progress
    self.partitions = partitions
    self.eos = tokenizer.eos_id if tokenizer.eos_id is not None else 1
    self.shards: dict[str, _Shards] = {}
    self.k = 0

  def _shards(self, task: str) -> _Shards:
    if task not in self.shards:
      self.shards[task] = _Shards(self.out / task)
    return self.shards[task]

  def build(self) -> dict:
    cfg = self.cfg
    self.out.mkdir(parents=True)
    if cfg.export_dir:
      from brd_jax.data import exported
      for task, examples in exported.read_texts(cfg.export_dir, cfg).items():
        self._text_task(task, examples)
    else:
      if cfg.paragraphs_dir:
        self._ledger_tasks()
      if cfg.task_distill_dir and not self.kd:  # KD mixes no task distillation (refused)
        from brd_jax.behaviors import task_distill
        self._text_task("brd_tdist", task_distill.read(cfg.task_distill_dir))
    return {"format": FORMAT, "kd": self.kd, "k": self.k, "seq_len": cfg.seq_len,
            "tasks": {t: {"shards": s.files, "counts": s.counts, "examples": sum(s.counts),
                          "tokens": s.tokens} for t, s in sorted(self.shards.items())}}

  # -- text and token examples --
  def _text_records(self, sh: _Shards, examples: list[dict]) -> list[bytes]:
    """As seqio's tokenize + append_eos_after_trim make them."""
    n = self.cfg.seq_len
    out = []
    for ids in self.tok.encode_batch([e["text"] for e in examples]):
      sh.tokens[0] += min(len(ids) + 1, n)
      sh.tokens[1] += max(len(ids) + 1 - n, 0)
      out.append(encode_example(ids[:n - 1] + [self.eos]))
    return out

  def _token_records(self, sh: _Shards, examples: list[dict], table) -> list[bytes]:
    ids_t, lps_t = table.arrays()
    out = []
    for e in examples:
      slot = np.asarray(e["teacher_slot"], np.int64)
      pos = np.flatnonzero(slot > formatting.KDTable.NONE)
      sh.tokens[0] += len(e["targets"])
      out.append(encode_example(e["targets"], (pos, ids_t[slot[pos]], lps_t[slot[pos]])))
    return out

  def _text_task(self, task: str, examples: list[dict]) -> None:
    sh = self._shards(task)
    per = self.cfg.shard_paragraphs
    for c, start in enumerate(range(0, len(examples), per)):
      sh.write(c, self._text_records(sh, examples[start:start + per]))

  # -- the ledger join --
  def _ledger_tasks(self) -> None:
    cfg = self.cfg
    paragraph_shards(cfg.paragraphs_dir)
    manifest, context, declared = formatting.ledger_settings(cfg.ledger_dir) \
        if cfg.ledger_dir else ({}, 0, ())
    if self.kd:
      self.k = int(manifest["topk"])
    behaviors = ("ner", "qra", "skd") + declared
    tasks = ("brd_ori",) + tuple(f"brd_{b}" for b in behaviors)
    chunks = self._join(manifest, behaviors, context) if cfg.ledger_dir else None
    per = cfg.shard_paragraphs
    for t in tasks:
      self._shards(t)
    batch: list[dict] = []
    bar = _bar(self.progress, "prepare: format", "paragraph")

    def flush(c):
      readings = formatting.Readings(chunks.load(c) if chunks else {}, context, declared)
      for t in tasks:
        self._chunk(t, c, batch, readings)
      bar.update(len(batch))
      batch.clear()

    c = 0
    for o, p in enumerate(iter_paragraphs(cfg.paragraphs_dir)):
      if o // per != c:
        flush(c)
        c = o // per
      batch.append(p)
    flush(c)
    bar.close()

  def _chunk(self, task: str, c: int, paragraphs: list[dict], readings) -> None:
    cfg, sh = self.cfg, self._shards(task)
    if self.kd:
      table = formatting.KDTable(self.k)
      ex = formatting.token_examples(paragraphs, readings, task, self.tok.encode, self.eos,
                                     cfg.seq_len, table, cfg.sep, cfg.level)
      sh.write(c, self._token_records(sh, ex, table))
    elif task == "brd_ori":
      sh.write(c, self._text_records(sh, formatting.original_examples(paragraphs)))
    else:
      ex = formatting.examples(paragraphs, readings, task[len("brd_"):], cfg.sep, cfg.level)
      sh.write(c, self._text_records(sh, ex))

  def _join(self, manifest: dict, behaviors: tuple, context: int) -> "_Chunks":
    """Spills records and key requests by key hash, joins each partition alone, and returns
    the joined readings grouped by paragraph chunk."""
    cfg = self.cfg
    spill = self.out / "spill"
    spill.mkdir()
    size = sum(p.stat().st_size for p in ledger.shards(cfg.ledger_dir, required=True))
    n = self.partitions or max(1, min(256, -(-size // SPILL_BYTES)))
    recs = _Spill(spill, "records", n)
    bar = _bar(self.progress, "prepare: partition ledger", "record")
    for r in ledger.read(cfg.ledger_dir):
      bar.update()
      if r.get("valid") is True:
        recs.add(r["sentence_key"], json.dumps(r, ensure_ascii=False))
    recs.close()
    bar.close()
    reqs = _Spill(spill, "requests", n)
    per, chunk = cfg.shard_paragraphs, 0
    for o, p in enumerate(iter_paragraphs(cfg.paragraphs_dir)):
      chunk = o // per
      for b in behaviors:
        for key in formatting.reading_keys(p, b, context):
          reqs.add(key, f"{key} {chunk}")
    reqs.close()
    out = _Chunks(spill, chunk + 1)
    for part in _bar(self.progress, "prepare: join", "partition", range(n)):
      chosen = ledger.select((json.loads(line) for line in recs.lines(part)), manifest)
      sent = set()
      for line in reqs.lines(part):
        key, c = line.split(" ")
        if key in chosen and (key, c) not in sent:
          sent.add((key, c))
          out.add(int(c), key, json.dumps(chosen[key], ensure_ascii=False))
    out.close()
    return out


class _Spill:
  """Lines partitioned by the hash of a key into n files."""

  def __init__(self, d: pathlib.Path, name: str, n: int):
    self.paths = [d / f"{name}-{i:04d}.txt" for i in range(n)]
    self.files = [p.open("w", encoding="utf-8") for p in self.paths]

  def add(self, key: str, line: str) -> None:
    self.files[int(key[:8], 16) % len(self.files)].write(line + "\n")

  def close(self) -> None:
    for f in self.files:
      f.close()

  def lines(self, i: int):
    with self.paths[i].open(encoding="utf-8") as f:
      for line in f:
        yield line.rstrip("\n")


class _Chunks:
  """Joined readings by paragraph chunk, in at most 64 files of consecutive chunks."""

  def __init__(self, d: pathlib.Path, n_chunks: int):
    self.n, self.groups = n_chunks, min(n_chunks, 64)
    self.spill = _Spill(d, "chunks", self.groups)
    self.cached: tuple[int, dict] | None = None

  def group(self, c: int) -> int:
    return c * self.groups // self.n

  def add(self, c: int, key: str, record_json: str) -> None:
    self.spill.files[self.group(c)].write(f"{c}\t{key}\t{record_json}\n")

  def close(self) -> None:
    self.spill.close()

  def load(self, c: int) -> dict:
    """sentence_key -> record for chunk c (its group is read once, when first asked)."""
    g = self.group(c)
    if self.cached is None or self.cached[0] != g:
      by_chunk: dict[int, dict] = {}
      for line in self.spill.lines(g):
        cc, key, rec = line.split("\t", 2)
        by_chunk.setdefault(int(cc), {})[key] = json.loads(rec)
      self.cached = (g, by_chunk)
    return self.cached[1].pop(c, {})


def _bar(progress: bool, desc: str, unit: str, it=None):
  from tqdm import tqdm
  return tqdm(it, desc=desc, unit=unit, disable=not progress, dynamic_ncols=True, leave=False)
