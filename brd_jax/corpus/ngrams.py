"""Word n-gram hashes shared by decontamination and MinHash shingles.

Words are lower-cased with punctuation stripped. An n-gram's 64-bit hash combines its words'
xxh3 hashes polynomially, so all n-grams of a text come from one vectorised pass.
"""
from __future__ import annotations

import re

import numpy as np
import xxhash

_PUNCT = re.compile(r"[^\w\s]|_")
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant: the polynomial's base


def words(text: str) -> list[str]:
  return _PUNCT.sub(" ", text.lower()).split()


def ngram_hashes(ws: list[str], n: int) -> np.ndarray:
  """uint64 hash of every n-word window (empty when there are fewer than n words)."""
  if len(ws) < n:
    return np.zeros(0, np.uint64)
  h = np.fromiter((xxhash.xxh3_64_intdigest(w.encode()) for w in ws), np.uint64, len(ws))
  powers = np.cumprod(np.full(n, _MULT, np.uint64), dtype=np.uint64)[::-1]
  with np.errstate(over="ignore"):
    return (np.lib.stride_tricks.sliding_window_view(h, n) * powers).sum(axis=1, dtype=np.uint64)


class Decontaminator:
  """Which evaluation task, if any, shares a word n-gram with a text.

  eval_texts: task -> texts (inputs as the model sees them). Texts shorter than n words cannot be
  matched; they are counted in `stats` as `too_short`.
  """

  def __init__(self, eval_texts: dict[str, list[str]], n: int = 13):
    self.n, self.tasks = n, sorted(eval_texts)
    self.stats = {t: {"examples": len(eval_texts[t]), "too_short": 0} for t in self.tasks}
    hashes, owners = [], []
    for i, task in enumerate(self.tasks):
      for text in eval_texts[task]:
        h = ngram_hashes(words(text), n)
        if not len(h):
          self.stats[task]["too_short"] += 1
        hashes.append(h)
        owners.append(np.full(len(h), i, np.int32))
    h = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    o = np.concatenate(owners) if owners else np.zeros(0, np.int32)
    order = np.argsort(h, kind="stable")
    self.hashes, self.owners = h[order], o[order]

  def __len__(self) -> int:
    return len(self.hashes)

  def task_of(self, text: str) -> str | None:
    if not len(self.hashes):
      return None
    h = ngram_hashes(words(text), self.n)
    if not len(h):
      return None
    i = np.searchsorted(self.hashes, h)
    i = np.minimum(i, len(self.hashes) - 1)
    hit = self.hashes[i] == h
    return self.tasks[self.owners[i[hit]].min()] if hit.any() else None
