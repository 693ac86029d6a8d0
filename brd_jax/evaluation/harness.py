"""Ranks each document's candidates by log-likelihood and scores accuracy under three rules.

Rules: `acc_mean_token` (mean per-token log-prob, the paper's), `acc` (sum, lm-eval's acc) and
`acc_norm` (sum / UTF-8 bytes of the candidate, lm-eval's acc_norm). Scored requests go to an
append-only cache keyed by (model fingerprint, request), so a killed run resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import time

import numpy as np

from brd_jax.errors import Preempted
from brd_jax.evaluation import tasks as tasks_lib
from brd_jax.io_utils import ObjectAppender, as_path, atomic_write_text, is_url, naming
from brd_jax.preemption import SigtermFlag

RULES = ("acc_mean_token", "acc", "acc_norm")
CHUNK_CHARS = 200_000  # ~50k tokens, a minute or two on a CPU: the work a killed run can lose


class Cache:
  """JSONL lines {"k": request hash, "ll", "n", "g"}; each chunk is flushed and fsynced."""

  def __init__(self, path):
    self.path = path
    self.data: dict[str, tuple[float, int, bool]] = {}
    self._object = ObjectAppender(path) if is_url(path) else None
    if path.exists():
      with path.open(encoding="utf-8") as f:
        for line in f:
          try:
            r = json.loads(line)
          except ValueError:
            continue  # a torn last line from a killed run
          self.data[r["k"]] = (r["ll"], r["n"], r["g"])

  @staticmethod
  def key(context: str, continuation: str) -> str:
    return hashlib.sha1(f"{context}\x00{continuation}".encode()).hexdigest()

  def add(self, items):
    lines = []
    for k, (ll, n, g) in items:
      self.data[k] = (ll, n, g)
      lines.append(json.dumps({"k": k, "ll": ll, "n": n, "g": g}) + "\n")
    if self._object is not None:  # an object store: the whole file, rewritten
      self._object.write("".join(lines))
      self._object.flush(force=True)
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    with naming(self.path), open(self.path, "a+b") as f:
      end = f.seek(0, os.SEEK_END)
      torn = end > 0 and f.seek(end - 1) >= 0 and f.read(1) != b"\n"  # writes go to the end
      # after a failed or killed write, start a fresh line so the torn one stays one bad line
      f.write((("\n" if torn else "") + "".join(lines)).encode("utf-8"))
      f.flush()
      os.fsync(f.fileno())


def samples_path(out_dir, task: str) -> pathlib.Path:
  """samples_<task>.jsonl, the task name made a file name (`bigbench:a/b` -> `bigbench_a_b`)."""
  import re
  return as_path(out_dir) / f"samples_{re.sub(r'[^A-Za-z0-9_.-]+', '_', task).strip('_')}.jsonl"


def _stderr(hits: np.ndarray) -> float:
  return float(np.std(hits, ddof=1) / np.sqrt(len(hits))) if len(hits) > 1 else 0.0


def score_docs(docs, lls, ntoks) -> dict:
  """Accuracy and standard error under each rule; lls/ntoks are per doc lists of per-choice values."""
  hits = {r: [] for r in RULES}
  for doc, ll, nt in zip(docs, lls, ntoks):
    ll, nt = np.asarray(ll), np.asarray(nt, dtype=np.float64)
    nchars = np.asarray(doc.choice_chars(), np.float64)  # lm-eval: characters, no delimiter
    hits["acc_mean_token"].append(int(np.argmax(ll / nt)) == doc.gold)
    hits["acc"].append(int(np.argmax(ll)) == doc.gold)
    hits["acc_norm"].append(int(np.argmax(ll / nchars)) == doc.gold)
  out = {"n": len(docs)}
  for r in RULES:
    h = np.asarray(hits[r], np.float64)
    out[r], out[f"{r}_stderr"] = float(h.mean()), _stderr(h)
  return out


def _chunks(docs, cache: Cache, chunk_chars: int = CHUNK_CHARS
            ) -> list[list[tuple[str, tuple[str, str]]]]:
  """The uncached requests, longest documents first, a document's candidates together, cut at
  document boundaries every `chunk_chars`: the scorer then packs rows of similar length and shares
  each question's prefix (request-hash order would scatter both)."""
  order = sorted(docs, key=lambda d: -(len(d.context) + max(map(len, d.choices))))
  chunks, chunk, chars, seen = [], [], 0, set()
  for d in order:
    for c in d.choices:
      k = Cache.key(d.context, c)
      if k not in cache.data and k not in seen:
        seen.add(k)
        chunk.append((k, (d.context, c)))
        chars += len(d.context) + len(c)
    if chars >= chunk_chars:
      chunks.append(chunk)
      chunk, chars = [], 0
  return chunks + [chunk] if chunk else chunks


def score(scorer, docs, cache: Cache, stop, task: str, progress_factory=None,
          chunk_chars: int = CHUNK_CHARS) -> int:
  """Scores every candidate of `docs` not yet in the cache, a chunk per commit; on SIGTERM
  (`stop.requested`) raises Preempted after the chunk. Returns how many requests were scored."""
  chunks = _chunks(docs, cache, chunk_chars)
  n_todo = sum(map(len, chunks))
  bar = progress_factory(task, n_todo) if progress_factory else None
  for c, chunk in enumerate(chunks):
    scored = scorer.loglik([r for _, r in chunk], progress=bar.update if bar else None)
    cache.add((k, (g.loglik, g.n_tokens, g.is_greedy)) for (k, _), g in zip(chunk, scored))
    if stop.requested:  # what is scored is cached; a rerun continues from there
      raise Preempted(f"SIGTERM: {task}: {c + 1} of {len(chunks)} chunks scored and cached "
                      f"in {cache.path}; rerun to continue")
  if bar:
    bar.close()
  return n_todo


def cached_scores(docs, cache: Cache) -> tuple[list, list]:
  """Per document, the log-likelihood and token count of each candidate, from the cache."""
  lls, ntoks = [], []
  for d in docs:
    vals = [cache.data[Cache.key(d.context, c)] for c in d.choices]
    lls.append([v[0] for v in vals])
    ntoks.append([v[1] for v in vals])
  return lls, ntoks


def evaluate(scorer, fingerprint: str, task_names, out_dir, data_dir=None, limit=None,
             log_samples: bool = False, progress_factory=None, divergence=None,
             num_fewshot: int = 0, chunk_chars: int = CHUNK_CHARS,
             divergence_limit: int = 0) -> dict:
  """Scores each task (resuming from the cache); with `divergence` (a `Divergence` over the
  student and a reference model) also the teacher-student CE / KL over context + gold answer,
  on the first `divergence_limit` documents of each task (0: all): a reference forward pass per
  document costs more than scoring it."""
  out_dir = as_path(out_dir)
  cache = Cache(out_dir / "cache" / f"{fingerprint}.jsonl")
  results = {}
  with SigtermFlag() as stop:  # one flag for every task: a signal between tasks counts too
    for task in task_names:
      pool = tasks_lib.load(task, data_dir)
      docs = tasks_lib.fewshot(pool, num_fewshot)[:limit] if num_fewshot else pool[:limit or None]
      t0 = time.perf_counter()
      n_todo = score(scorer, docs, cache, stop, task, progress_factory, chunk_chars)
      lls, ntoks = cached_scores(docs, cache)
      results[task] = {**score_docs(docs, lls, ntoks),
                       "seconds": round(time.perf_counter() - t0, 2), "scored_now": n_todo}
      per_doc = [None] * len(docs)
      if divergence is not None:
        ref_docs = docs[:divergence_limit or None]
        bar = progress_factory(f"{task} (reference)", len(ref_docs)) if progress_factory else None
        results[task].update(divergence.score([d.context + d.choices[d.gold] for d in ref_docs],
                                              bar.update if bar else None))
        results[task]["divergence_docs"] = len(ref_docs)
        per_doc = results[task].pop("per_doc") + [None] * (len(docs) - len(ref_docs))
        if bar:
          bar.close()
      if log_samples:  # with a reference: each document's sums (ce, kl, nll, tokens) too
        atomic_write_text(samples_path(out_dir, task), "".join(
            json.dumps({"context": d.context, "choices": d.choices, "gold": d.gold,
                        "loglik": ll, "n_tokens": nt,
                        **({"ref": ref} if ref is not None else {})}, ensure_ascii=False) + "\n"
            for d, ll, nt, ref in zip(docs, lls, ntoks, per_doc)))
  return results
