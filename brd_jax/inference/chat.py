"""Chat formatting: the tokenizer's own template, or one chosen in gin (`chat.template`)."""
from __future__ import annotations

import gin


@gin.configurable("chat")
def template(template: str | None = None, system: str | None = None) -> tuple[str | None, str | None]:
  """(template, system prompt). template: None = the tokenizer's; 'vicuna_v1.1'; or Jinja text."""
  return template, system


def format_prompt(tokenizer, text: str) -> str:
  tmpl, system = template()
  messages = ([{"role": "system", "content": system}] if system else []) + [
      {"role": "user", "content": text}]
  return tokenizer.apply_chat_template(messages, add_generation_prompt=True, template=tmpl)
