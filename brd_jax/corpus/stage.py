"""`run(cfg, workdir, eval_texts)`: raw text -> WORKDIR/paragraphs/ (the format: `paragraphs.py`).

Two phases, so that the output does not depend on how many processes did the work:
1. every process reads its share of the input (whole files when there are at least as many files
   as processes, else every n-th document), normalises, filters, splits, checks contamination and
   signs each paragraph, and commits the result in chunks of `chunk_docs` documents under
   WORKDIR/parts/ (a killed process re-reads its share but redoes only uncommitted chunks);
2. the process that finds every share done merges all chunks in input order, drops exact and
   near duplicates (first seen wins) and writes paragraphs/ whole, by a directory rename. On an
   object store (gs://), which has neither locks nor renames, process 0 waits for the other
   shares and merges; its manifest.json, written last, is what makes the corpus count.
A re-run whose inputs (paths, sizes, mtimes), settings and evaluation texts match the manifest
does nothing. A process holds the writer lock of its index (`writer_lock`) through both phases, so
a second process started with the same index fails at once instead of sharing its work files.
"""
from __future__ import annotations

import collections
import dataclasses
import heapq
import json
import logging
import os
import pathlib
import time

import numpy as np

from brd_jax import writer_lock
from brd_jax.corpus import filters, ngrams, readers
from brd_jax.corpus import split as split_lib
from brd_jax.corpus.config import CorpusConfig
from brd_jax.corpus.dedup import Deduper, Signer
from brd_jax.corpus.paragraphs import (MANIFEST, ShardWriter, paragraph_id, read_manifest,
                                       write_manifest)
from brd_jax.errors import Preempted, UserError
from brd_jax.preemption import SigtermFlag
from brd_jax.io_utils import (as_path, atomic_write_bytes, atomic_write_text, content_digest,
                              file_lock, is_url, rmtree, write_jsonl)

VERSION = 1  # bump when the processing changes what is kept
log = logging.getLogger(__name__)


def processes(cfg: CorpusConfig) -> tuple[int, int]:
  from brd_jax import sharding
  return sharding.process_share(cfg.num_processes, cfg.process_index, "corpus")


def run(cfg: CorpusConfig, workdir, eval_texts: dict[str, list[str]] | None = None,
        progress: bool = True) -> dict:
  """Builds (or finishes, or confirms) WORKDIR/paragraphs/; returns a summary."""
  workdir = as_path(workdir)
  eval_texts = eval_texts or {}
  sources = readers.expand(cfg.inputs, cfg.format,
                           exclude=(workdir / "paragraphs", workdir / "parts"))
  if not sources:
    raise UserError("no input files (the inputs hold only this stage's own output)")
  eval_fp = content_digest({t: content_digest(v) for t, v in sorted(eval_texts.items())})
  fingerprint = content_digest({"version": VERSION,
                                "inputs": [dataclasses.astuple(s) for s in sources],
                                "config": cfg.fingerprint_fields(), "eval": eval_fp})
  done = read_manifest(workdir)
  if done and done.get("fingerprint") == fingerprint:
    return {"status": "up to date", "paragraphs": done["kept"], "dir": str(workdir / "paragraphs")}
  n, i = processes(cfg)
  # One writer per (workdir, process index): a duplicate of a running process fails at once.
  with writer_lock.hold(workdir, i, "corpus"):
    return _run_share(cfg, workdir, sources, fingerprint, eval_texts, n, i, progress)


def _run_share(cfg, workdir, sources, fingerprint, eval_texts, n, i, progress) -> dict:
  """Phase 1 for process i's share, then the merge when every share is done."""
  parts = workdir / "parts" / f"{fingerprint[:16]}-{n}p-{cfg.chunk_docs}d"
  _phase1(cfg, sources, parts / f"p{i:04d}", n, i, eval_texts, progress)
  atomic_write_text(parts / f"p{i:04d}" / "DONE", "")
  if is_url(workdir):  # no lock on an object store: process 0 merges, once every share is done
    waiting = _wait_for_shares(parts, n, cfg.merge_wait_s if i == 0 else 0)
    if i != 0 or waiting:
      return {"status": "share done", "process": i, "waiting_for": waiting or [0]}
    manifest = _merge(cfg, sources, parts, n, workdir, fingerprint, eval_texts, progress)
  else:
    waiting = _wait_for_shares(parts, n, 0)
    if waiting:
      return {"status": "share done", "process": i, "waiting_for": waiting}
    with file_lock(workdir / ".merge.lock"):
      done = read_manifest(workdir)
      if done and done.get("fingerprint") == fingerprint:  # another process merged meanwhile
        return {"status": "up to date", "paragraphs": done["kept"],
                "dir": str(workdir / "paragraphs")}
      manifest = _merge(cfg, sources, parts, n, workdir, fingerprint, eval_texts, progress)
  if not cfg.keep_parts:
    rmtree(workdir / "parts")
  return {"status": "written", "paragraphs": manifest["kept"], "dir": str(workdir / "paragraphs"),
          "dropped": manifest["dropped"]}


def _wait_for_shares(parts, n: int, wait_s: float) -> list[int]:
  """The shares still not done after waiting up to `wait_s` seconds."""
  deadline, said = time.time() + wait_s, 0.0
  while True:
    waiting = [j for j in range(n) if not (parts / f"p{j:04d}" / "DONE").exists()]
    if not waiting or time.time() >= deadline:
      return waiting
    if time.time() - said > 60:
      log.info("corpus: waiting for the shares of processes %s to merge", waiting)
      said = time.time()
    time.sleep(min(5.0, max(deadline - time.time(), 0)))


def _share(sources, n: int, i: int):
  """(file index, source, keep(doc index)) for this process: whole files, or every n-th doc."""
  if len(sources) >= n:
    return [(f, s, None) for f, s in enumerate(sources) if f % n == i]
  return [(f, s, (n, i)) for f, s in enumerate(sources)]


def _stream(cfg, sources, n, i, counts):
  """(position, doc id, raw paragraphs) of this process's documents, in input order."""
  for f, src, stripe in _share(sources, n, i):
    for d, (doc_id, paras) in enumerate(readers.documents(src, cfg, counts)):
      if stripe is None or d % stripe[0] == stripe[1]:
        yield (f, d), doc_id or f"{f}:{pathlib.Path(src.name).name}:{d}", paras


def _committed(part) -> int:
  """Number of leading chunks of this share that are committed (their .json marker exists)."""
  c = 0
  while (part / f"chunk-{c:06d}.json").exists():
    c += 1
  return c


class _Processor:
  """One paragraph at a time: normalise, filter, split, decontaminate, sign."""

  def __init__(self, cfg, eval_texts):
    self.cfg = cfg
    self.split = split_lib.make(cfg.splitter)
    self.decontam = ngrams.Decontaminator(eval_texts, cfg.decontam_ngram)
    self.sign = Signer(cfg.minhash_perms, cfg.shingle_words, cfg.seed)

  def document(self, pos, doc_id, paras, counts, decontam):
    cfg, out = self.cfg, []
    texts = []
    for raw in paras:
      text, had_control = filters.normalise(raw)
      if had_control:
        counts["control_chars_removed"] += 1
      if text:
        texts.append(text)
    counts["paragraphs_read"] += len(texts)
    if filters.repetitive(texts, cfg.max_doc_repeat_fraction):
      counts["repetitive_document"] += len(texts)
      return out
    for p, text in enumerate(texts):
      reason = filters.text_reason(text, cfg)
      sentences = None
      if reason is None:
        sentences = self.split(text)
        reason = filters.sentence_reason(sentences, cfg)
      if reason is None and (task := self.decontam.task_of(text)):
        reason = "contaminated"
        decontam[task] += 1
      if reason:
        counts[reason] += 1
        continue
      out.append(({"pos": [*pos, p], "id": paragraph_id(text), "doc_id": doc_id,
                   "text": text, "sentences": sentences}, self.sign(text)))
    return out


def _phase1(cfg, sources, part, n, i, eval_texts, progress):
  if (part / "DONE").exists():
    return
  part.mkdir(parents=True, exist_ok=True)
  skip = _committed(part) * cfg.chunk_docs
  proc = _Processor(cfg, eval_texts)
  from tqdm import tqdm
  bar = tqdm(desc=f"corpus {i + 1}/{n}", unit="doc", disable=not progress, initial=skip,
             dynamic_ncols=True)
  chunk, recs, counts, decontam, nbytes, t0 = skip // cfg.chunk_docs, [], \
      collections.Counter(), collections.Counter(), 0, time.time()
  docs_in_chunk = kept = 0
  past_skip = skip == 0
  with SigtermFlag() as stop:
    for k, (pos, doc_id, paras) in enumerate(_stream(cfg, sources, n, i, counts)):
      if k < skip:  # committed before a restart: read past, do not redo
        counts.clear()
        continue
      past_skip = True
      nbytes += sum(len(p) for p in paras)
      recs.extend(proc.document(pos, doc_id, paras, counts, decontam))
      docs_in_chunk += 1
      bar.update(1)
      if docs_in_chunk == cfg.chunk_docs:
        kept += len(recs)
        _commit_chunk(part, chunk, recs, counts, decontam, docs_in_chunk, nbytes,
                      time.time() - t0)
        bar.set_postfix(kept=kept, mb_per_s=f"{nbytes / 1e6 / max(time.time() - t0, 1e-9):.2f}")
        chunk, recs, counts, decontam, docs_in_chunk, nbytes, t0 = chunk + 1, [], \
            collections.Counter(), collections.Counter(), 0, 0, time.time()
        if stop.requested:
          bar.close()
          raise Preempted(f"SIGTERM: {chunk} chunk(s) of {cfg.chunk_docs} documents committed "
                          f"in {part}; rerun to continue")
  if docs_in_chunk or (counts and past_skip):
    _commit_chunk(part, chunk, recs, counts, decontam, docs_in_chunk, nbytes, time.time() - t0)
  bar.close()


def _commit_chunk(part, c, recs, counts, decontam, docs, nbytes, seconds):
  """Signatures, then records, then the marker that makes the chunk count: each appears whole."""
  import io
  buf = io.BytesIO()
  sigs = np.stack([s for _, s in recs]) if recs else np.zeros((0, 0), np.uint64)
  np.save(buf, sigs, allow_pickle=False)
  atomic_write_bytes(part / f"chunk-{c:06d}.npy", buf.getvalue())
  write_jsonl(part / f"chunk-{c:06d}.jsonl", (r for r, _ in recs))
  atomic_write_text(part / f"chunk-{c:06d}.json", json.dumps(
      {"docs": docs, "paragraphs": len(recs), "bytes": nbytes, "seconds": seconds,
       "counts": dict(counts), "contaminated": dict(decontam)}))


def _chunk_stream(part):
  import io
  c = 0
  while (part / f"chunk-{c:06d}.json").exists():
    sigs = np.load(io.BytesIO((part / f"chunk-{c:06d}.npy").read_bytes()), allow_pickle=False)
    with (part / f"chunk-{c:06d}.jsonl").open(encoding="utf-8") as f:
      for k, line in enumerate(f):
        rec = json.loads(line)
        yield rec["pos"], rec, sigs[k]
    c += 1


def _merge(cfg, sources, parts, n, workdir, fingerprint, eval_texts, progress) -> dict:
  """Phase 2: every share's chunks -> paragraphs/, deduplicated in input order; its manifest."""
  counts, decontam, read = _chunk_totals(parts, n)
  dedup = Deduper(cfg)  # before the old output goes: a bad setting leaves it in place
  out = _fresh_output(workdir)
  t0 = time.time()
  written = _dedup_into(ShardWriter(out, cfg.shard_paragraphs), dedup, cfg, parts, n, counts,
                        read["paragraphs"], progress)
  if not written["kept"]:
    rmtree(out)
    raise UserError(f"no paragraph passed the filters (dropped: {dict(counts.most_common(5))}); "
                    "nothing written")
  manifest = _manifest(cfg, sources, n, fingerprint, counts, read, written, time.time() - t0)
  manifest["decontamination"] = _decontamination(cfg, eval_texts, decontam)
  write_manifest(out, manifest)
  _publish(workdir, out)
  return manifest


def _chunk_totals(parts, n: int):
  """What phase 1 read, dropped and took, summed from the chunk markers (the merge's only input)."""
  counts, decontam = collections.Counter(), collections.Counter()
  read = collections.Counter(docs=0, bytes=0, seconds=0.0, paragraphs=0)
  for j in range(n):
    for meta_path in sorted((parts / f"p{j:04d}").glob("chunk-*.json"), key=lambda p: p.name):
      meta = json.loads(meta_path.read_text())
      counts.update(meta["counts"])
      decontam.update(meta["contaminated"])
      read.update({k: meta[k] for k in read})
  return counts, decontam, read


def _fresh_output(workdir):
  """An empty directory to merge into, such that a half-written corpus never counts."""
  # An object store cannot rename: paragraphs/ is rewritten in place, its manifest deleted first.
  if is_url(workdir):
    final = workdir / "paragraphs"
    (final / MANIFEST).unlink(missing_ok=True)
    rmtree(final)
    out = final
  else:
    for stale in (*workdir.glob(".paragraphs.tmp-*"), *workdir.glob(".paragraphs.old-*")):
      rmtree(stale)  # a merge killed half way (we hold the merge lock)
    out = workdir / f".paragraphs.tmp-{os.getpid()}"
  out.mkdir(parents=True, exist_ok=True)
  return out


def _dedup_into(writer, dedup, cfg, parts, n, counts, candidates, progress) -> dict:
  """Keeps the first of each duplicate in input order, so no process count changes the output."""
  from tqdm import tqdm
  merged = heapq.merge(*(_chunk_stream(parts / f"p{j:04d}") for j in range(n)),
                       key=lambda x: x[0])
  capped = False
  for _, rec, sig in tqdm(merged, total=candidates, desc="dedup", unit="par",
                          disable=not progress, dynamic_ncols=True):
    if cfg.max_paragraphs and writer.records >= cfg.max_paragraphs:
      capped = True
      break
    reason = dedup.check(int(rec["id"], 16), sig)
    if reason:
      counts[reason] += 1
      continue
    del rec["pos"]
    writer.add(rec)
  writer.flush()
  if dedup.over_capacity:
    log.warning("corpus: %d paragraphs passed the filters, more than corpus.dedup_capacity=%d: "
                "raise it so that false duplicate drops stay at bloom_error_rate",
                dedup.inserted, cfg.dedup_capacity)
  return {"kept": writer.records, "sentences": writer.sentences, "shards": writer.shards,
          "dedup_over_capacity": dedup.over_capacity, "stopped_at_max_paragraphs": capped}


def _manifest(cfg, sources, n, fingerprint, counts, read, written, seconds_dedup) -> dict:
  """What a re-run compares (the fingerprint) and what a reader of the corpus wants to know."""
  nbytes, seconds = read["bytes"], read["seconds"]
  return {
      "fingerprint": fingerprint, "version": VERSION,
      "inputs": [{"name": s.name, "format": s.kind, "files": [list(x) for x in s.stamp]}
                 for s in sources],
      "config": cfg.fingerprint_fields(),
      "processes": n, "documents": read["docs"], "input_mb": round(nbytes / 1e6, 3),
      "paragraphs_read": counts["paragraphs_read"], **written,
      "dropped": {k: v for k, v in sorted(counts.items()) if k not in
                  ("paragraphs_read", "invalid_utf8_replaced", "control_chars_removed")},
      "repaired": {k: counts[k] for k in ("invalid_utf8_replaced", "control_chars_removed")},
      "seconds_read": round(seconds, 2), "seconds_dedup": round(seconds_dedup, 2),
      "mb_per_s_read": round(nbytes / 1e6 / max(seconds, 1e-9), 3),
  }


def _decontamination(cfg, eval_texts, decontam) -> dict:
  """Per task, with the examples under n words counted apart: those can never match."""
  return {t: {"examples": len(v),
              "too_short_to_match": sum(len(ngrams.words(x)) < cfg.decontam_ngram for x in v),
              "paragraphs_dropped": decontam.get(t, 0)}
          for t, v in sorted(eval_texts.items())}


def _publish(workdir, out) -> None:
  """One rename swaps in the new corpus whole (an older one, of other inputs or settings, goes)."""
  final = workdir / "paragraphs"
  if out == final:  # an object store's merge wrote in place
    return
  if final.exists():
    old = workdir / f".paragraphs.old-{os.getpid()}"
    final.rename(old)
    out.rename(final)
    rmtree(old)
  else:
    out.rename(final)
