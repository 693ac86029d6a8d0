"""Sentence splitting: one interface over the candidate libraries, and how they were compared.

`blingfire` with `repair=True` is the default, chosen by `compare()` (`brd bench split`): of
pysbd, syntok and blingfire it gets the most of the hard cases in `split_cases.py` right and is
~20-50x faster (the corpus issue's note has the table). `repair` fixes the kinds of error
blingfire makes on that set and on real text: a list marker left on its own ("1."), a quoted ?/!
split from the lower-case words that continue its sentence ('"Stop!" | shouted the guard.'), a
title cut from its name ('Is it? | Mr. | Koga is going.') and a sentence end missed before a
title ('It was late. Dr. Smith left.' kept whole).
"""
from __future__ import annotations

import re
import time
from typing import Callable

from brd_jax.errors import UserError, optional_import

SPLITTERS = ("pysbd", "blingfire", "syntok")


def _pysbd() -> Callable[[str], list[str]]:
  pysbd = optional_import("pysbd", "splitters", "corpus.splitter = 'pysbd'")
  seg = pysbd.Segmenter(language="en", clean=False)
  return seg.segment


def _blingfire() -> Callable[[str], list[str]]:
  import blingfire
  return lambda text: blingfire.text_to_sentences(text).split("\n")


def _syntok() -> Callable[[str], list[str]]:
  segmenter = optional_import("syntok.segmenter", "splitters", "corpus.splitter = 'syntok'")

  def split(text: str) -> list[str]:
    out = []
    for para in segmenter.analyze(text):
      for sent in para:
        start, last = sent[0], sent[-1]
        out.append(text[start.offset:last.offset + len(last.value)])
    return out
  return split


_LIST_MARKER = re.compile(r"^\(?(\d{1,3}|[a-zA-Z])[.)]$")
_QUOTED_END = re.compile(r"[?!][\"'”’)\]]$")
_TITLES = r"(?:Mr|Mrs|Ms|Dr|Prof|St|Gen|Sen|Rep|Rev|Capt|Col|Lt|Sgt|Mt|Messrs)"
_TITLE = re.compile(r"^[\"'“‘(]?" + _TITLES + r"\.$")
# A sentence end (a word in lower case, then . ! or ?) right before a title and a name.
_END_BEFORE_TITLE = re.compile(r"(?<=[a-z0-9][.!?])([\"'”’)]?) (?=[\"'“‘(]?" + _TITLES +
                               r"\.? [A-Z])")


def repair(sentences: list[str]) -> list[str]:
  """Splits before a title that follows a sentence end; joins a lone list marker or title to the
  next piece, and a lower-case piece to a quoted ?/! before it."""
  pieces = [p for s in sentences for p in _END_BEFORE_TITLE.sub("\\1\n", s).split("\n")]
  out: list[str] = []
  for s in pieces:
    if out and (_LIST_MARKER.match(out[-1]) or _TITLE.match(out[-1])):
      out[-1] = f"{out[-1]} {s}"
    elif out and s[:1].islower() and _QUOTED_END.search(out[-1]):
      out[-1] = f"{out[-1]} {s}"
    else:
      out.append(s)
  return out


def make(name: str, repair_errors: bool = True) -> Callable[[str], list[str]]:
  """text -> stripped, non-empty sentences (with `repair` unless repair_errors=False)."""
  builders = {"pysbd": _pysbd, "blingfire": _blingfire, "syntok": _syntok}
  if name not in builders:
    raise UserError(f"corpus.splitter={name!r}: choose one of {', '.join(SPLITTERS)}")
  raw = builders[name]()

  def split(text: str) -> list[str]:
    out = [s for s in (x.strip() for x in raw(text)) if s]
    return repair(out) if repair_errors else out
  return split


def accuracy(split: Callable[[str], list[str]], cases) -> tuple[float, list]:
  """Fraction of cases split exactly as the gold list, and the wrong ones."""
  wrong = [(cat, text, gold, got) for cat, _, text, gold in cases
           if (got := split(text)) != gold]
  return 1 - len(wrong) / len(cases), wrong


def throughput(split: Callable[[str], list[str]], paragraphs: list[str],
               min_seconds: float = 2.0) -> float:
  """MB/s of UTF-8 text split, best of repeated passes over `paragraphs` lasting min_seconds."""
  size = sum(len(p.encode()) for p in paragraphs)
  best, spent = 0.0, 0.0
  while spent < min_seconds:
    t0 = time.perf_counter()
    for p in paragraphs:
      split(p)
    dt = time.perf_counter() - t0
    spent += dt
    best = max(best, size / dt / 1e6)
  return best


def compare(names=SPLITTERS, paragraphs: list[str] | None = None,
            min_seconds: float = 2.0) -> list[dict]:
  """Accuracy on the hard cases, per category, and MB/s of each splitter on `paragraphs`."""
  from brd_jax.corpus.split_cases import CASES
  paragraphs = paragraphs or [c[2] for c in CASES]
  rows = []
  for name, fix in [(n, f) for n in names for f in (False, True)]:
    split = make(name, fix)
    acc, wrong = accuracy(split, CASES)
    per_cat = {}
    for cat, *_ in CASES:
      per_cat.setdefault(cat, [0, 0])[1] += 1
    for cat, *_ in wrong:
      per_cat[cat][0] += 1
    rows.append({"splitter": name + ("+repair" if fix else ""), "accuracy": acc, "n_cases": len(CASES),
                 "wrong": [{"category": c, "text": t, "gold": g, "got": s} for c, t, g, s in wrong],
                 "wrong_by_category": {c: w for c, (w, _) in per_cat.items() if w},
                 "mb_per_s": throughput(split, paragraphs, min_seconds)})
  return rows
