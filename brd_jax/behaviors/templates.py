"""Versioned few-shot prompts for the teacher's reading, rendered in its chat format.

The prompts come from the behaviour files (`spec.py`, `builtin/*.yaml`). A template's id
(`name-style@version`, `name@version` for a one-style behaviour) is part of every unit key:
editing a prompt means a new version, so outputs of the old prompt are never mistaken for the new
one's. Styles: the demonstrations as earlier chat turns (`*-chat`) or inline in one user message
(`*-inline`); `plain` asks with no demonstrations. The demonstrations were written for this project.
"""
from __future__ import annotations

import dataclasses

from brd_jax.behaviors import spec
from brd_jax.errors import UserError

@dataclasses.dataclass(frozen=True)
class Template:
  name: str
  version: int
  behavior: str
  style: str                          # chat | inline | plain
  instruction: str
  demos: tuple = ()
  query: str = "Sentence: {text}"
  context_query: str = "Context: {context}\nSentence: {text}"

  @property
  def id(self) -> str:
    return f"{self.name}@{self.version}"

  def _query(self, text: str, context: str) -> str:
    return (self.context_query if context else self.query).format(
        instruction=self.instruction, text=text, context=context)

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


def of(b: spec.Behavior) -> dict[str, Template]:
  """A behaviour's templates by id, its default first."""
  one = len(b.styles) == 1
  return {t.id: t for t in (
      Template(b.name if one else f"{b.name}-{style}", b.version, b.name, style, b.instruction,
               b.demos, b.query, b.context_query) for style in b.styles)}


def default(behavior: str) -> str:
  return next(iter(of(spec.get(behavior))))


def chosen(overrides: dict | None, behaviors=()) -> dict[str, str]:
  """behaviour -> template id: each behaviour's default (its first style) with a config's
  `generate.templates` over them."""
  return {**{b: default(b) for b in (*spec.BUILTINS, *behaviors)}, **(overrides or {})}


def get(template_id: str, behavior: str | None = None) -> Template:
  owner = template_id.split("@")[0].split("-")[0]  # behaviour names hold no '-'
  try:
    found = of(spec.get(owner)).get(template_id)
  except UserError:
    found = None
  if found is not None:
    if behavior and found.behavior != behavior:
      raise UserError(f"template {template_id} is for {found.behavior}, not {behavior}")
    return found
  known = sorted(t for b in spec.known() for t in of(spec.get(b)))
  raise UserError(f"unknown template {template_id!r}; known: {', '.join(known)}")
