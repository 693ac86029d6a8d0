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

import contextlib
import json
import logging
import os
import pathlib
import tempfile
import threading
import time

import numpy as np

from brd_jax.behaviors import ledger
from brd_jax.corpus.paragraphs import iter_paragraphs, paragraph_shards
from brd_jax.data import formatting
from brd_jax.data.config import DataConfig
from brd_jax.errors import UserError
from brd_jax.io_utils import (as_path, atomic_write_bytes, atomic_write_text, content_digest,
                              dir_fingerprint, file_lock, is_url, rmtree)

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
    return json.loads((as_path(directory) / MANIFEST).read_text())
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
            partitions: int | None = None, ledger_tasks=None, built_by: str = "local"):
  """The prepared directory of these inputs and settings, built unless it exists already.

  One process builds (a file lock); the others wait and then find the manifest. A URL root
  (`prepare_beam`'s) is built in place, its manifest last. ledger_tasks(builder) builds the
  paragraphs + ledger tasks instead of the local join."""
  root = as_path(root)
  fp = fingerprint(cfg, tokenizer, kd)
  out = root / fp
  if read_manifest(out):
    return out
  url = is_url(root)
  with contextlib.nullcontext() if url else file_lock(root / f".{fp}.lock"):
    if read_manifest(out):
      return out
    tmp = out if url else root / f".{fp}.partial"
    rmtree(tmp)  # a killed build left it; its shards are rebuilt, which gives the same bytes
    t0 = time.perf_counter()
    manifest = Builder(cfg, tokenizer, kd, tmp, progress, partitions).build(ledger_tasks)
    manifest.update(fingerprint=fp, seconds=round(time.perf_counter() - t0, 1),
                    built_by=built_by)
    rmtree(tmp / "spill")
    atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    if not url:
      os.replace(tmp, out)
  log.info("prepared %s in %.1f s (%s)", out, manifest["seconds"], built_by)
  return out


# ---- building ---------------------------------------------------------------------------------
def write_shard(path, records: list[bytes]) -> None:
  """One shard, whole: written beside its name and renamed (a retried or concurrent writer of
  the same shard leaves no torn file); to a URL through a local file (ArrayRecord writes files)."""
  from array_record.python import array_record_module as ar
  path = as_path(path)
  local = pathlib.Path(tempfile.mkdtemp(prefix="brd-shard-")) / path.name if is_url(path) else \
      path.parent / f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp"
  w = ar.ArrayRecordWriter(str(local), _ARRAY_RECORD_OPTIONS)
  for r in records:
    w.write(r)
  w.close()
  if is_url(path):
    atomic_write_bytes(path, local.read_bytes())
    rmtree(local.parent)
  else:
    os.replace(local, path)


def shard_name(chunk: int) -> str:
  return f"shard-{chunk:05d}.array_record"


class ChunkFormatter:
  """A chunk of paragraphs and the readings its join found -> one task's records (what the
  local build and the Beam build both run, so their shards are the same bytes)."""

  def __init__(self, cfg: DataConfig, tokenizer, kd: bool, k: int):
    self.cfg, self.tok, self.kd, self.k = cfg, tokenizer, kd, k
    self.eos = tokenizer.eos_id if tokenizer.eos_id is not None else 1

  def text_records(self, examples: list[dict]) -> tuple[list[bytes], int, int]:
    """(records, tokens kept, tokens cut), as seqio's tokenize + append_eos_after_trim make
    them."""
    n, out, kept, cut = self.cfg.seq_len, [], 0, 0
    for ids in self.tok.encode_batch([e["text"] for e in examples]):
      kept += min(len(ids) + 1, n)
      cut += max(len(ids) + 1 - n, 0)
      out.append(encode_example(ids[:n - 1] + [self.eos]))
    return out, kept, cut

  def chunk(self, task: str, paragraphs: list[dict], readings) -> tuple[list[bytes], int, int]:
    cfg = self.cfg
    if self.kd:
      table = formatting.KDTable(self.k)
      ex = formatting.token_examples(paragraphs, readings, task, self.tok.encode, self.eos,
                                     cfg.seq_len, table, cfg.sep, cfg.level)
      return self._token_records(ex, table)
    if task == "brd_ori":
      return self.text_records(formatting.original_examples(paragraphs))
    return self.text_records(
        formatting.examples(paragraphs, readings, task[len("brd_"):], cfg.sep, cfg.level))

  @staticmethod
  def _token_records(examples: list[dict], table) -> tuple[list[bytes], int, int]:
    ids_t, lps_t = table.arrays()
    out, kept = [], 0
    for e in examples:
      slot = np.asarray(e["teacher_slot"], np.int64)
      pos = np.flatnonzero(slot > formatting.KDTable.NONE)
      kept += len(e["targets"])
      out.append(encode_example(e["targets"], (pos, ids_t[slot[pos]], lps_t[slot[pos]])))
    return out, kept, 0


def ledger_plan(cfg: DataConfig, kd: bool) -> tuple[dict, int, tuple, tuple, tuple, int]:
  """(ledger manifest, context sentences, declared behaviours, behaviours, tasks, top-k) of a
  paragraphs + ledger build; registers the behaviours declared in the ledger's files."""
  manifest, context, declared = formatting.ledger_settings(cfg.ledger_dir) \
      if cfg.ledger_dir else ({}, 0, ())
  behaviors = ("ner", "qra", "skd") + declared
  tasks = ("brd_ori",) + tuple(f"brd_{b}" for b in behaviors)
  return manifest, context, declared, behaviors, tasks, int(manifest["topk"]) if kd else 0


class _Shards:
  """One task's shards: shard c holds chunk c's examples, in paragraph order."""

  def __init__(self, d):
    self.dir, self.files, self.counts = as_path(d), [], []
    if not is_url(self.dir):
      self.dir.mkdir(parents=True, exist_ok=True)
    self.tokens = [0, 0]  # kept, cut

  def write(self, chunk: int, result: tuple[list[bytes], int, int]) -> None:
    records, kept, cut = result
    write_shard(self.dir / shard_name(chunk), records)
    self.add(chunk, len(records), kept, cut)

  def add(self, chunk: int, count: int, kept: int, cut: int) -> None:
    self.files.append(shard_name(chunk))
    self.counts.append(count)
    self.tokens[0] += kept
    self.tokens[1] += cut

  def info(self) -> dict:
    return {"shards": self.files, "counts": self.counts, "examples": sum(self.counts),
            "tokens": self.tokens}


class Builder:
  """The local build; `prepare_beam` runs the ledger join on a Beam runner instead."""

  def __init__(self, cfg: DataConfig, tokenizer, kd: bool, out, progress: bool,
               partitions: int | None = None):
    self.cfg, self.tok, self.kd, self.out, self.progress = cfg, tokenizer, kd, out, progress
    self.partitions = partitions
    self.shards: dict[str, _Shards] = {}
    self.k = 0

  def shards_of(self, task: str) -> _Shards:
    if task not in self.shards:
      self.shards[task] = _Shards(as_path(self.out) / task)
    return self.shards[task]

  def build(self, ledger_tasks=None) -> dict:
    """Every task's shards and the manifest's body; `ledger_tasks(self)` builds the paragraphs
    + ledger tasks (default: the local join)."""
    cfg = self.cfg
    if not is_url(self.out):
      pathlib.Path(self.out).mkdir(parents=True)
    if cfg.export_dir:
      from brd_jax.data import exported
      for task, examples in exported.read_texts(cfg.export_dir, cfg).items():
        self.text_task(task, examples)
    else:
      if cfg.paragraphs_dir:
        (ledger_tasks or Builder._ledger_tasks)(self)
      if cfg.task_distill_dir and not self.kd:  # KD mixes no task distillation (refused)
        from brd_jax.behaviors import task_distill
        self.text_task("brd_tdist", task_distill.read(cfg.task_distill_dir))
    return {"format": FORMAT, "kd": self.kd, "k": self.k, "seq_len": cfg.seq_len,
            "tasks": {t: s.info() for t, s in sorted(self.shards.items())}}

  def text_task(self, task: str, examples: list[dict]) -> None:
    sh, per = self.shards_of(task), self.cfg.shard_paragraphs
    fmt = ChunkFormatter(self.cfg, self.tok, False, 0)
    for c, start in enumerate(range(0, len(examples), per)):
      sh.write(c, fmt.text_records(examples[start:start + per]))

  # -- the ledger join --
  def _ledger_tasks(self) -> None:
    cfg = self.cfg
    paragraph_shards(cfg.paragraphs_dir)
    manifest, context, declared, behaviors, tasks, self.k = ledger_plan(cfg, self.kd)
    chunks = self._join(manifest, behaviors, context) if cfg.ledger_dir else None
    fmt = ChunkFormatter(cfg, self.tok, self.kd, self.k)
    per = cfg.shard_paragraphs
    for t in tasks:
      self.shards_of(t)
    batch: list[dict] = []
    bar = _bar(self.progress, "prepare: format", "paragraph")

    def flush(c):
      readings = formatting.Readings(chunks.load(c) if chunks else {}, context, declared)
      for t in tasks:
        self.shards_of(t).write(c, fmt.chunk(t, batch, readings))
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
