"""Teacher text -> structure, with one reason per rejection; `render(record)` -> training text.

NER: `[{"entity", "type", "description"}]` from lines `entity | type | description` (or `None`:
no entity, a valid empty reading). QRA: `[{"question", "answer"}]` from `Q:` / `A:` lines. SKD:
the response itself. Reasons, checked in this order: empty, truncated (cut at max tokens),
runaway_repetition, not_english, then the behaviour's own (missing_fields,
entity_not_in_sentence; no_question, question_without_answer, answer_not_grounded: fewer than
half of the answer's content words come from the sentence or the question, e.g. a demonstration
copied into an unrelated reading).
"""
from __future__ import annotations

import collections
import re

ERRORS = ("empty", "truncated", "runaway_repetition", "not_english", "missing_fields",
          "entity_not_in_sentence", "no_question", "question_without_answer",
          "answer_not_grounded")
_BULLET = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s*")
_Q = re.compile(r"^\s*(?:Q|Question)\s*[:：]\s*(.*)$", re.I)
_A = re.compile(r"^\s*(?:A|Answer)\s*[:：]\s*(.*)$", re.I)
_EN = frozenset("the a an of and to in is was are were for on with as by at from that this it "
                "what who when where why how which did does do".split())
_STOP = _EN | frozenset("not but had has have his her him she they them their there then than "
                        "very also just about into onto over some any all one two its our your "
                        "you was".split())
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
  en, other = sum(w in _EN for w in ws), sum(w in _OTHER for w in ws)
  return other > en


def _norm(s: str) -> str:
  return " ".join(s.lower().split())


def parse_ner(text: str, sentence: str):
  lines = [_BULLET.sub("", l).strip() for l in text.strip().splitlines() if l.strip()]
  if len(lines) == 1 and lines[0].rstrip(".").lower() in ("none", "no entities", "n/a"):
    return [], None
  out, sent = [], _norm(sentence)
  for line in lines:
    parts = [p.strip() for p in line.split("|")]
    if len(parts) != 3 or not all(parts):
      return None, "missing_fields"
    entity, etype, desc = parts
    if _norm(entity).strip("\"'“”") not in sent:
      return None, "entity_not_in_sentence"
    out.append({"entity": entity, "type": etype.lower(), "description": desc})
  return out, None


def _content(text: str) -> set[str]:
  """Content-word stems: words of 3+ letters outside a short stop list, cut to 5 characters so
  that "pickled" meets "pickle"."""
  return {w[:5] for w in re.findall(r"[^\W\d_]{3,}", text.lower()) if w not in _STOP}


def grounded(answer: str, source: str) -> bool:
  words = _content(answer)
  return not words or len(words & _content(source)) >= 0.5 * len(words)


def parse_qra(text: str, sentence: str = ""):
  pairs, q = [], None
  for line in text.strip().splitlines():
    if m := _Q.match(line):
      if q is not None:
        return None, "question_without_answer"
      q = m.group(1).strip()
    elif (m := _A.match(line)) and q is not None:
      a = m.group(1).strip()
      if not a:
        return None, "question_without_answer"
      pairs.append({"question": q, "answer": a})
      q = None
  if q is not None:
    return None, "question_without_answer"
  if not pairs or not all(p["question"] for p in pairs):
    return None, "no_question"
  if sentence and not all(grounded(p["answer"], f"{sentence} {p['question']}") for p in pairs):
    return None, "answer_not_grounded"
  return pairs, None


def parse(behavior: str, text: str, unit_text: str, finish_reason: str = "eos"):
  """(parsed, error): parsed is None exactly when error is a reason from ERRORS."""
  if not text.strip():
    return None, "empty"
  if finish_reason == "length":
    return None, "truncated"
  if repetitive(text):
    return None, "runaway_repetition"
  if not_english(text):
    return None, "not_english"
  if behavior == "ner":
    return parse_ner(text, unit_text)
  if behavior == "qra":
    return parse_qra(text, unit_text)
  return text.strip(), None


def render(record: dict) -> str:
  """The training text of one reading: NER(s) / QRA(s) as the student sees it."""
  parsed, behavior = record.get("parsed"), record.get("behavior")
  if behavior == "ner":
    if not parsed:
      return "Named entities: none"
    return "Named entities:\n" + "\n".join(
        f"{e['entity']} ({e['type']}): {e['description']}" for e in parsed)
  if behavior == "qra":
    return "\n".join(f"Question: {p['question']}\nAnswer: {p['answer']}" for p in parsed)
  return (record.get("text") or "").strip()
