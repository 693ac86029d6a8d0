"""Versioned few-shot prompts for the teacher's reading, rendered in its chat format.

A template's id (`name@version`) is part of every unit key: editing a prompt means a new version,
so outputs of the old prompt are never mistaken for the new one's. Two styles per behaviour: the
demonstrations as earlier chat turns (`*-chat`) or inline in one user message (`*-inline`).
The demonstrations were written for this project.
"""
from __future__ import annotations

import dataclasses

from brd_jax.errors import UserError

BEHAVIORS = ("ner", "qra", "skd")

NER_INSTRUCTION = (
    "Read the sentence and list the named entities in it. Write one entity per line as\n"
    "entity | type | short description\n"
    "Types: person, organization, location, date, number, event, work, product, other. Copy each "
    "entity exactly as it is written in the sentence. If the sentence names no entity, write "
    "None.")
QRA_INSTRUCTION = (
    "Read the sentence. Ask one question that the sentence answers, then answer it. Write "
    "exactly two lines:\nQ: the question\nA: the answer")
SKD_INSTRUCTION = "Read the paragraph and respond to it helpfully."

_S1 = "Marie Curie moved to Paris in 1891 to study physics at the Sorbonne."
_S2 = "The Amazon River carries more water than any other river on Earth."
_S3 = "The committee will meet again next week to review the plan."
_S4 = "Apple released the first iPhone on June 29, 2007, in the United States."

NER_DEMOS = (
    (_S1, "Marie Curie | person | a Polish-born physicist and chemist\n"
          "Paris | location | the capital city of France\n"
          "1891 | date | the year of her move\n"
          "the Sorbonne | organization | a university in Paris"),
    (_S2, "Amazon River | location | a river in South America\n"
          "Earth | location | the planet people live on"),
    (_S3, "None"),
    (_S4, "Apple | organization | an American technology company\n"
          "iPhone | product | a smartphone made by Apple\n"
          "June 29, 2007 | date | the day the first iPhone went on sale\n"
          "United States | location | a country in North America"),
)
QRA_DEMOS = (
    (_S1, "Q: Why did Marie Curie move to Paris in 1891?\nA: To study physics at the Sorbonne."),
    (_S2, "Q: Which river carries more water than any other river on Earth?\n"
          "A: The Amazon River."),
    (_S3, "Q: What will the committee review next week?\nA: The plan."),
    (_S4, "Q: When did Apple release the first iPhone?\nA: On June 29, 2007."),
)


@dataclasses.dataclass(frozen=True)
class Template:
  name: str
  version: int
  behavior: str
  style: str                          # chat | inline | plain
  instruction: str
  demos: tuple = ()

  @property
  def id(self) -> str:
    return f"{self.name}@{self.version}"

  def _query(self, text: str, context: str) -> str:
    if self.behavior == "skd":
      return f"{self.instruction}\n\nParagraph: {text}"
    q = f"Sentence: {text}"
    return f"Context: {context}\n{q}" if context else q

  def messages(self, text: str, context: str = "") -> list[dict]:
    """Chat messages for one unit (a sentence, or a paragraph for skd)."""
    if self.style == "chat":
      msgs = []
      for k, (s, out) in enumerate(self.demos):
        first = f"{self.instruction}\n\n" if k == 0 else ""
        msgs += [{"role": "user", "content": first + self._query(s, "")},
                 {"role": "assistant", "content": out}]
      if not msgs:
        return [{"role": "user", "content": f"{self.instruction}\n\n{self._query(text, context)}"}]
      return msgs + [{"role": "user", "content": self._query(text, context)}]
    if self.style == "inline":
      shots = "\n\n".join(f"{self._query(s, '')}\n{out}" for s, out in self.demos)
      return [{"role": "user", "content":
               f"{self.instruction}\n\nExamples:\n\n{shots}\n\nNow you.\n\n"
               f"{self._query(text, context)}"}]
    return [{"role": "user", "content": self._query(text, context)}]

  def prompt(self, tokenizer, text: str, context: str = "", chat_template: str | None = None,
             system: str | None = None) -> str:
    msgs = ([{"role": "system", "content": system}] if system else []) + \
        self.messages(text, context)
    return tokenizer.apply_chat_template(msgs, add_generation_prompt=True, template=chat_template)


TEMPLATES = {t.id: t for t in (
    Template("ner-chat", 1, "ner", "chat", NER_INSTRUCTION, NER_DEMOS),
    Template("ner-inline", 1, "ner", "inline", NER_INSTRUCTION, NER_DEMOS),
    Template("qra-chat", 1, "qra", "chat", QRA_INSTRUCTION, QRA_DEMOS),
    Template("qra-inline", 1, "qra", "inline", QRA_INSTRUCTION, QRA_DEMOS),
    Template("skd", 1, "skd", "plain", SKD_INSTRUCTION),
)}
DEFAULTS = {"ner": "ner-chat@1", "qra": "qra-chat@1", "skd": "skd@1"}


def chosen(overrides: dict | None) -> dict[str, str]:
  """behaviour -> template id: the defaults with a config's `generate.templates` over them."""
  return {**DEFAULTS, **(overrides or {})}


def get(template_id: str, behavior: str | None = None) -> Template:
  if template_id not in TEMPLATES:
    raise UserError(f"unknown template {template_id!r}; known: {', '.join(sorted(TEMPLATES))}")
  t = TEMPLATES[template_id]
  if behavior and t.behavior != behavior:
    raise UserError(f"template {template_id} is for {t.behavior}, not {behavior}")
  return t
