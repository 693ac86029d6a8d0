"""Teacher text -> structure, with one reason per rejection; `render(record)` -> training text.

Shared reasons, checked first and in this order: empty, truncated (cut at max tokens),
runaway_repetition, not_english. Then the behaviour's own parser, made from its file (`spec.py`):
NER `[{"entity", "type", "description"}]` from lines `entity | type | description` (or `None`:
no entity, a valid empty reading; missing_fields, entity_not_in_sentence); QRA
`[{"question", "answer"}]` from `Q:` / `A:` lines (no_question, question_without_answer,
answer_not_grounded: fewer than half of the answer's content words come from the sentence or the
question, e.g. a demonstration copied into an unrelated reading); SKD the response itself.
"""
from __future__ import annotations

import collections
import re

from brd_jax.behaviors import spec

SHARED_ERRORS = ("empty", "truncated", "runaway_repetition", "not_english")
_OTHER = frozenset("le la les est une des et der die das und ist el los las que por una del y "
                   "il di che non sono".split())


def repetitive(text: str) -> bool:
  """A line said three times, or one 3-word sequence five times: the decoder is looping."""
  lines = [l.strip().lower() for l in text.splitlines() if l.strip()]
  if lines and collections.Counter(lines).most_common(1)[0][1] >= 3:
    return True
  ws = text.lower().split()
  grams = collections.Counter(zip(ws, ws[1:], ws[2:]))
  return bool(grams) and grams.most_common(1)[0][1] >= 5


def not_english(text: str) -> bool:
  letters = [c for c in text if c.isalpha()]
  if letters and sum(ord(c) > 0x24F for c in letters) / len(letters) > 0.3:
    return True  # mostly outside the Latin script
  ws = re.findall(r"[^\W\d_]+", text.lower())
  if len(ws) < 6:
    return False
  en, other = sum(w in spec.EN_WORDS for w in ws), sum(w in _OTHER for w in ws)
  return other > en


def parse(behavior: str, text: str, unit_text: str, finish_reason: str = "eos"):
  """(parsed, error): parsed is None exactly when error is one reason (SHARED_ERRORS or the
  behaviour's own, `spec.Behavior.errors`)."""
  if not text.strip():
    return None, "empty"
  if finish_reason == "length":
    return None, "truncated"
  if repetitive(text):
    return None, "runaway_repetition"
  if not_english(text):
    return None, "not_english"
  return spec.get(behavior).parse(text, unit_text)


def render(record: dict) -> str:
  """The training text of one reading as the student sees it (its behaviour's render format)."""
  return spec.get(record.get("behavior")).render(record.get("parsed"), record.get("text") or "")
