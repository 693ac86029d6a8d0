"""A small synthetic paragraphs/ + ledger/ pair in the formats of DESIGN.md, for data and trainer tests."""
import json
import random

CITIES = ["Paris", "Lima", "Oslo", "Cairo", "Quito", "Hanoi", "Perth", "Accra"]
THINGS = ["river", "bridge", "market", "museum", "harbour", "library", "tower", "garden"]


def make(root, n_paragraphs=40, seed=0, ner=True, qra=True):
  """Writes root/paragraphs/shard-00000.jsonl and root/ledger/shard-00000.jsonl; returns both dirs."""
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
        led.append({"paragraph_id": pid, "sentence_index": j, "behavior": "ner", "valid": True,
                    "text": f"NER: {city} (location): a city."})
      if qra:
        led.append({"paragraph_id": pid, "sentence_index": j, "behavior": "qra", "valid": True,
                    "text": f"Q: Where is it? A: In {city}."})
  led.append({"paragraph_id": "p0000", "sentence_index": 0, "behavior": "ner", "valid": False,
              "text": "garbage"})
  (par_dir / "shard-00000.jsonl").write_text("\n".join(json.dumps(p) for p in pars) + "\n")
  (led_dir / "shard-00000.jsonl").write_text("\n".join(json.dumps(r) for r in led) + "\n")
  return par_dir, led_dir


def task_of(text: str) -> str:
  return "brd_ner" if "NER:" in text else "brd_qra" if "Q:" in text else "brd_ori"
