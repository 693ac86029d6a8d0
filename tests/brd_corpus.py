"""A small synthetic paragraphs/ + ledger/ pair in the formats of DESIGN.md, for data and trainer
tests. Ledger records are built with `behaviors.ledger`'s keys, as `brd generate` writes them."""
import json
import random

from brd_jax.behaviors import ledger

CITIES = ["Paris", "Lima", "Oslo", "Cairo", "Quito", "Hanoi", "Perth", "Accra"]
THINGS = ["river", "bridge", "market", "museum", "harbour", "library", "tower", "garden"]


def record(behavior, sentence, parsed, valid=True, attempt=0, paragraph_id="p", index=0):
  sk = ledger.sentence_key(behavior, sentence)
  unit = ledger.unit_key(sk, f"{behavior}-test@1", "teacher", {})
  return {"key": ledger.record_key(unit, attempt), "unit": unit, "sentence_key": sk,
          "attempt": attempt, "paragraph_id": paragraph_id, "sentence_index": index,
          "behavior": behavior, "template": f"{behavior}-test@1", "teacher": "teacher",
          "sentence": sentence, "text": json.dumps(parsed), "parsed": parsed if valid else None,
          "valid": valid, "error": None if valid else "missing_fields"}


def make(root, n_paragraphs=40, seed=0, ner=True, qra=True):
  """Writes root/paragraphs/shard-00000.jsonl and a ledger shard; returns both dirs."""
  rng = random.Random(seed)
  par_dir, led_dir = root / "paragraphs", root / "ledger"
  par_dir.mkdir(parents=True, exist_ok=True)
  led_dir.mkdir(parents=True, exist_ok=True)
  pars, led = [], []
  for i in range(n_paragraphs):
    sents = []
    for j in range(3):
      c, t = rng.choice(CITIES), rng.choice(THINGS)
      sents.append(f"The {t} in {c} opened in {1800 + 7 * i + j}.")
    pid = f"p{i:04d}"
    pars.append({"id": pid, "doc_id": f"d{i // 4}", "text": " ".join(sents), "sentences": sents})
    for j, s in enumerate(sents):
      city = s.split(" in ")[1].split(" opened")[0]
      if ner:
        led.append(record("ner", s, [{"entity": city, "type": "location",
                                      "description": "a city"}], paragraph_id=pid, index=j))
      if qra:
        led.append(record("qra", s, [{"question": "Where is it?", "answer": f"In {city}."}],
                          paragraph_id=pid, index=j))
  led.append(record("ner", pars[0]["sentences"][0], None, valid=False, attempt=1))
  (par_dir / "shard-00000.jsonl").write_text("\n".join(json.dumps(p) for p in pars) + "\n")
  (led_dir / "shard-p0000-000000.jsonl").write_text("\n".join(json.dumps(r) for r in led) + "\n")
  return par_dir, led_dir


def task_of(text: str) -> str:
  return ("brd_ner" if "Named entities:" in text else "brd_qra" if "Question:" in text
          else "brd_ori")
