"""`brd bench split`: the sentence splitters on the hard cases and on real English text.

Accuracy: the fraction of `corpus/split_cases.py` cases split exactly as the gold list (CASES, and
HELD_OUT: cases written after `split.repair` was designed). Speed: MB/s of UTF-8 text, best of
repeated passes, on the paragraphs of a real text (default: the `english-botchan` asset read as
`wrapped` prose). The project's splitter (corpus.splitter's default, with repair) is compared with
pysbd, the accuracy-first library.
"""
from __future__ import annotations

import collections

from brd_jax.benchmarks import report


def _paragraphs(path: str | None) -> list[str]:
  from brd_jax import assets
  from brd_jax.corpus import readers
  from brd_jax.corpus.config import CorpusConfig
  path = path or str(assets.fetch("english-botchan"))
  cfg = CorpusConfig(inputs=(path,), format="auto" if not path.endswith("botchan.txt") else
                     "wrapped")
  out = []
  for src in readers.expand(cfg.inputs, cfg.format):
    for _, paras in readers.documents(src, cfg, collections.Counter()):
      out.extend(p for p in paras if len(p) > 40)
  return out


def run(text_path: str | None = None, json_path: str | None = None,
        min_seconds: float = 2.0) -> dict:
  from brd_jax.corpus import split
  from brd_jax.corpus.config import CorpusConfig
  from brd_jax.corpus.split_cases import HELD_OUT
  paras = _paragraphs(text_path)
  rows = split.compare(paragraphs=paras, min_seconds=min_seconds)
  for r in rows:
    name, _, fix = r["splitter"].partition("+")
    r["held_out_accuracy"] = split.accuracy(split.make(name, bool(fix)), HELD_OUT)[0]
  mine = next(r for r in rows if r["splitter"] == CorpusConfig().splitter + "+repair")
  peer = next(r for r in rows if r["splitter"] == "pysbd")
  table = [(f"{r['splitter']}", f"{r['accuracy']:.3f} of {r['n_cases']} hard cases, "
            f"{r['held_out_accuracy']:.3f} held out, {r['mb_per_s']:.2f} MB/s; wrong: "
            f"{', '.join(f'{c} {n}' for c, n in r['wrong_by_category'].items()) or '-'}")
           for r in rows]
  table.append(("real text", f"{len(paras)} paragraphs, "
                f"{sum(len(p.encode()) for p in paras) / 1e6:.2f} MB"))
  return report("hard-case accuracy", mine["accuracy"], peer["accuracy"],
                {"splitters": rows, "project_splitter": mine["splitter"],
                 "peer_splitter": "pysbd"}, table, json_path)
