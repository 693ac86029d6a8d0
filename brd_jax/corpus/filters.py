"""Normalisation and the paragraph filters; each drop has one reason, counted in the manifest."""
from __future__ import annotations

import re
import unicodedata

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\ufeff]")
_TERMINAL = re.compile(r"[.!?…][\"'”’)\]]*$")


def normalise(text: str) -> tuple[str, bool]:
  """NFC, control / zero-width characters removed, whitespace runs -> one space; and whether
  control characters were removed."""
  had_control = bool(_CONTROL.search(text))
  if had_control:
    text = _CONTROL.sub(" ", text)
  if not text.isascii():
    text = unicodedata.normalize("NFC", text)
  return " ".join(text.split()), had_control


def ends_sentence(text: str) -> bool:
  """Ends in terminal punctuation (closing quotes and brackets allowed after it)."""
  return bool(_TERMINAL.search(text))


def alpha_ratio(text: str) -> float:
  chars = [c for c in text if not c.isspace()]
  return sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0


def text_reason(text: str, cfg) -> str | None:
  """Checks that need no sentence split (cheap ones first)."""
  if len(text) < cfg.min_chars:
    return "too_short"
  if len(text) > cfg.max_chars:
    return "too_long"
  if cfg.require_terminal_punct and not ends_sentence(text):
    return "no_terminal_punctuation"
  low = text.lower()
  if any(b in low for b in cfg.boilerplate):
    return "boilerplate"
  if alpha_ratio(text) < cfg.min_alpha_ratio:
    return "low_alpha_ratio"
  return None


def sentence_reason(sentences: list[str], cfg) -> str | None:
  if len(sentences) < cfg.min_sentences:
    return "too_few_sentences"
  if len(sentences) > cfg.max_sentences:
    return "too_many_sentences"
  if min(map(len, sentences)) < cfg.min_sentence_chars:
    return "sentence_too_short"
  if max(map(len, sentences)) > cfg.max_sentence_chars:
    return "sentence_too_long"
  return None


def repetitive(paragraphs: list[str], max_fraction: float) -> bool:
  """A document whose paragraphs repeat (menus, footers) beyond max_fraction (Gopher's rule,
  Rae et al. 2021, at paragraph level)."""
  if len(paragraphs) < 2:
    return False
  return 1 - len(set(paragraphs)) / len(paragraphs) > max_fraction
