"""Exact and near-duplicate removal with datasketch: MinHash signatures, an LSH index of Bloom
filters (LSHBloom, Khan et al. 2024) so that memory is fixed by `dedup_capacity`, not the input.

Signatures are computed where the paragraphs are read (in parallel); the index is filled in one
pass over all paragraphs in input order, so the first of a group of duplicates is kept whatever
the number of processes.
"""
from __future__ import annotations

import warnings

import numpy as np

from brd_jax.corpus import ngrams


class Signer:
  """Paragraph text -> MinHash signature (uint64[num_perm]) over word shingles."""

  def __init__(self, num_perm: int, shingle_words: int, seed: int):
    from datasketch import MinHash
    self._MinHash, self.num_perm, self.k = MinHash, num_perm, shingle_words
    self.permutations = MinHash(num_perm=num_perm, seed=seed, scheme="affine64").permutations

  def minhash(self, hashvalues=None):
    return self._MinHash(num_perm=self.num_perm, hashfunc=int, permutations=self.permutations,
                         hashvalues=hashvalues, scheme="affine64")

  def __call__(self, text: str) -> np.ndarray:
    ws = ngrams.words(text)
    shingles = ngrams.ngram_hashes(ws, min(self.k, max(len(ws), 1))) if ws else \
        np.zeros(1, np.uint64)
    m = self.minhash()
    m.update_batch(shingles.tolist())
    return np.asarray(m.hashvalues, np.uint64)


class Deduper:
  """First-seen wins: `check(content_key, signature)` -> a drop reason, or None (and remembers)."""

  def __init__(self, cfg):
    import pybloomfilter
    from datasketch import MinHashLSHBloom
    self.cfg = cfg
    self.signer = Signer(cfg.minhash_perms, cfg.shingle_words, cfg.seed)
    self.exact = pybloomfilter.BloomFilter(cfg.dedup_capacity, cfg.bloom_error_rate) \
        if cfg.exact_dedup else None
    self.lsh = None
    if cfg.near_dedup:
      with warnings.catch_warnings():  # an in-memory index is what we want
        warnings.simplefilter("ignore", RuntimeWarning)
        self.lsh = MinHashLSHBloom(threshold=cfg.near_dup_threshold, num_perm=cfg.minhash_perms,
                                   n=cfg.dedup_capacity, fp=cfg.bloom_error_rate)

    self.inserted = 0

  @property
  def over_capacity(self) -> bool:
    """More paragraphs than the filters were sized for: false drops grow past bloom_error_rate."""
    return self.inserted > self.cfg.dedup_capacity

  def check(self, content_key: int, signature: np.ndarray) -> str | None:
    self.inserted += 1
    if self.exact is not None:
      if content_key in self.exact:
        return "exact_duplicate"
      self.exact.add(content_key)
    if self.lsh is not None:
      m = self.signer.minhash(signature)
      if self.lsh.query(m):
        return "near_duplicate"
      self.lsh.insert(m)
    return None
