"""Tiny llama teachers with a byte-level tokenizer and a chat template, saved as HF dirs.

`make`: random weights; its readings never parse (engine and ledger mechanics only).
`make_reader`: trained here (torch, ~20 s, once per test session) to read the way `READINGS` says,
so a known share of units is valid and the arms of an experiment get different data:

- ner: `Zora | person | a girl in the story` when the unit's text (sentence and context) holds
  "Zora", else `None`. Valid unless Zora is only in the context (entity_not_in_sentence).
- qra: `Q: Where did Zora walk?` / `A: Zora walked home.`: grounded (valid) only in sentences
  that say "walked" or "home".
- skd: `It is a short story about a walk.`

`reading_text` writes English text whose sentences fall in those classes in known proportions.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import random
import re

import torch
import transformers

from brd_jax import tokenizer

CHAT = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}")
# The reader's chat format keeps the instruction's first words and the unit's own query (not the
# demonstrations), so its prompts are ~100 bytes and it trains in seconds on CPU.
READER_CHAT = ("{% if add_generation_prompt %}<{{ messages[0]['content'][:24] }}>"
               "{{ messages[-1]['content'] }}\n<assistant>{% endif %}")
NAME = "Zora"
READINGS = {"ner": f"{NAME} | person | a girl in the story", "ner_none": "None",
            "qra": f"Q: Where did {NAME} walk?\nA: {NAME} walked home.",
            "skd": "It is a short story about a walk."}


def reading(behavior: str, sentence: str, context: str = "") -> str:
  """What the reading teacher writes for a unit (greedy)."""
  if behavior == "ner":
    return READINGS["ner"] if NAME in f"{context} {sentence}" else READINGS["ner_none"]
  return READINGS[behavior]


def valid(behavior: str, sentence: str, context: str = "") -> bool:
  """Whether that reading passes `brd generate`'s checks (stated here, not asked of the parser)."""
  if behavior == "ner":
    return NAME in sentence or NAME not in context
  if behavior == "qra":
    return bool(re.search(r"\b(walked|home)\b", sentence.lower()))
  return True


def _config(**kw):
  return transformers.LlamaConfig(vocab_size=258, bos_token_id=1, eos_token_id=1, pad_token_id=0,
                                  max_position_embeddings=4096, num_attention_heads=4,
                                  num_key_value_heads=2, **kw)


def _save_tokenizer(path, chat=CHAT):
  tok = tokenizer.byte_level()
  tok.chat_template = chat
  tok.save(path)
  return tok


def make(path, seed=0):
  torch.manual_seed(seed)
  model = transformers.LlamaForCausalLM(_config(hidden_size=32, intermediate_size=64,
                                                num_hidden_layers=2))
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  model.save_pretrained(path)
  _save_tokenizer(path)
  return path


# ---------------------------------------------------------------- text in known classes

_SUBJECTS = ["The harbour", "Our village", "The old mill", "A small library", "The north road",
             "The museum", "Their orchard", "The river ferry", "The night market", "The chapel"]
_VERBS = ["was rebuilt", "was opened", "was closed", "was painted", "was sold", "was visited"]
_EXTRA = ["quickly", "again", "at dawn", "in spring", "by hand", "with care", "for years",
          "near the square", "after the storm", "before noon"]


def _extra(rng):
  return " ".join(rng.sample(_EXTRA, rng.randrange(1, 3)))


def sentence(rng: random.Random, kind: str) -> str:
  """kind: 'zh' (Zora; walked home), 'z' (Zora), 'h' (walked home), 'plain'."""
  n = rng.randrange(1000, 9999)
  if kind == "zh":
    return f"{NAME} walked home {_extra(rng)} in {n} with friend {rng.randrange(10**5)}."
  if kind == "z":
    return f"{NAME} met a friend {_extra(rng)} near gate {rng.randrange(10**5)} in {n}."
  if kind == "h":
    return (f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {_extra(rng)} and worker "
            f"{rng.randrange(10**5)} walked home in {n}.")
  return f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {_extra(rng)} in {n} by worker " \
         f"{rng.randrange(10**6)}."


KINDS = ("zh", "z", "h", "plain")


def reading_text(n_docs: int, seed: int = 0, pars: int = 2, per_paragraph: int = 3) -> str:
  """Blank-line separated documents of one-line paragraphs; every kind of sentence appears."""
  rng = random.Random(seed)
  docs = []
  for _ in range(n_docs):
    docs.append("\n".join(" ".join(sentence(rng, rng.choice(KINDS)) for _ in range(per_paragraph))
                          for _ in range(pars)))
  return "\n\n".join(docs) + "\n"


# ---------------------------------------------------------------- the reading teacher


def _examples(rng: random.Random, tok, n: int):
  """(prompt ids, reading ids + EOS) as `brd generate` prompts its default templates."""
  from brd_jax.behaviors import templates
  out = []
  for i in range(n):
    behavior = ("ner", "ner", "qra", "skd")[i % 4]
    s = sentence(rng, rng.choice(KINDS))
    context = ""
    if behavior != "skd" and rng.random() < 0.5:  # Zora in the context only: the hard case
      context = sentence(rng, rng.choice(KINDS))
    if behavior == "skd":
      s = " ".join([s] + [sentence(rng, rng.choice(KINDS)) for _ in range(rng.randrange(3))])
    t = templates.get(templates.default(behavior))
    prompt = tok.encode(t.prompt(tok, s, context))
    out.append((prompt, tok.encode(reading(behavior, s, context)) + [1]))
  return out


def _batch(examples):
  T = max(len(p) + len(r) for p, r in examples)
  ids = torch.zeros((len(examples), T), dtype=torch.long)
  labels = torch.full((len(examples), T), -100, dtype=torch.long)
  mask = torch.zeros((len(examples), T), dtype=torch.long)
  for b, (p, r) in enumerate(examples):
    seq = p + r
    ids[b, :len(seq)] = torch.tensor(seq)
    labels[b, len(p):len(seq)] = torch.tensor(r)
    mask[b, :len(seq)] = 1
  return ids, labels, mask


def _greedy_ok(model, examples) -> float:
  hits = 0
  with torch.no_grad():
    for p, r in examples:
      out = model.generate(torch.tensor([p]), max_new_tokens=len(r) + 2, do_sample=False,
                           pad_token_id=0, eos_token_id=1)[0, len(p):].tolist()
      hits += out[:len(r)] == r
  return hits / len(examples)


def recipe_digest() -> str:
  from brd_jax.behaviors import templates
  return hashlib.sha256(pathlib.Path(__file__).read_bytes() + torch.__version__.encode() +
                        pathlib.Path(templates.__file__).read_bytes()).hexdigest()[:16]


def make_reader(path, seed=0, min_steps=500, max_steps=1000):
  """Trains the reading teacher into PATH (an HF dir); raises if it does not read as `reading`
  says on held-out units."""
  path = pathlib.Path(path)
  if (path / "reader.json").exists() and \
      json.loads((path / "reader.json").read_text())["digest"] == recipe_digest():
    return path
  torch.manual_seed(seed)
  torch.set_num_threads(2)
  model = transformers.LlamaForCausalLM(_config(hidden_size=64, intermediate_size=128,
                                                num_hidden_layers=2))
  tok = tokenizer.byte_level()
  tok.chat_template = READER_CHAT
  rng = random.Random(seed)
  held_out = _examples(random.Random(seed + 1), tok, 96)
  opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
  step, score = 0, 0.0
  while step < max_steps:
    ids, labels, mask = _batch(_examples(rng, tok, 16))
    loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
    step += 1
    if step >= min_steps and step % 25 == 0 and loss.item() < 0.02:
      score = _greedy_ok(model.eval(), held_out)
      model.train()
      if score == 1.0:
        break
  if score < 1.0:
    raise RuntimeError(f"the reading teacher did not learn to read: {score:.0%} of held-out "
                       f"units after {step} steps (loss {loss.item():.4f})")
  model.eval()
  model.save_pretrained(path)
  _save_tokenizer(path, READER_CHAT)
  (path / "reader.json").write_text(json.dumps({"digest": recipe_digest(), "steps": step}))
  return path
