"""`brd complete`'s entry point: `run(cfg, model, prompts, mesh)` -> completions (gin `complete.*`)."""
from __future__ import annotations

import dataclasses
import time

import gin

from brd_jax import sharding
from brd_jax.errors import UserError


@gin.configurable("complete")
@dataclasses.dataclass(frozen=True)
class CompleteConfig:
  max_new_tokens: int = 64
  temperature: float = 0.0       # 0 = greedy
  top_k: int = 0                 # 0 = off
  top_p: float = 1.0             # 1 = off
  seed: int = 0
  batch_size: int = 32
  stop: tuple = ()
  chat: bool = False             # wrap each prompt in the tokenizer's (or chat.template's) format

  def __post_init__(self):
    if self.max_new_tokens < 1 or self.batch_size < 1:
      raise UserError("complete.max_new_tokens and complete.batch_size must be >= 1")
    if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
      raise UserError("complete.temperature >= 0, complete.top_k >= 0 and 0 < complete.top_p <= 1")


def run(cfg: CompleteConfig, model: str, prompts: list[str], mesh=None,
        progress: bool = True) -> list[str]:
  """One completion per prompt; a prompt's sample depends on (seed, its position) only."""
  import jax
  from tqdm import tqdm
  from brd_jax.checkpoints import resolve
  from brd_jax.inference import chat
  from brd_jax.inference.engine import Engine
  from brd_jax.inference.sampling import Sampling
  mesh = sharding.multi_device(mesh)
  loaded = resolve.load(model, mesh)
  tok = loaded.tokenizer
  if tok is None:
    raise UserError(f"--model {model} has no tokenizer")
  texts = [chat.format_prompt(tok, p) if cfg.chat else p for p in prompts]
  engine = Engine(loaded.model, tok, mesh, max_batch=cfg.batch_size)
  base = jax.random.key(cfg.seed)
  keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jax.numpy.arange(len(texts)))
  sampling = Sampling(cfg.temperature, cfg.top_k, cfg.top_p)
  outs, n_tokens, t0 = [], 0, time.perf_counter()
  bar = tqdm(total=len(texts), unit="prompt", disable=not progress)
  for s in range(0, len(texts), cfg.batch_size):
    gens = engine.generate([tok.encode(t) for t in texts[s:s + cfg.batch_size]],
                           cfg.max_new_tokens, sampling, keys=keys[s:s + cfg.batch_size],
                           stop=cfg.stop)
    outs.extend(g.text for g in gens)
    n_tokens += sum(len(g.tokens) for g in gens)
    bar.update(len(gens))
    bar.set_postfix(tokens_per_s=f"{n_tokens / (time.perf_counter() - t0):.1f}")
  bar.close()
  return outs


def run_file(cfg: CompleteConfig, model: str, prompts_path, out_path, mesh=None) -> int:
  """Completes the "prompt" of each line of a JSONL file into `out_path` (the input fields plus
  "completion"); returns how many were written."""
  from brd_jax.io_utils import read_records, write_jsonl
  records = read_records(prompts_path, ("prompt",))
  outs = run(cfg, model, [r["prompt"] for r in records], mesh)
  return write_jsonl(out_path, ({**r, "completion": c} for r, c in zip(records, outs)))
