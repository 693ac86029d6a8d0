"""`brd loglik`'s entry point: log-likelihoods of (context, continuation) requests, as
lm-evaluation-harness's `loglikelihood` asks for them, from a JSONL file into another."""
from __future__ import annotations

import time

from brd_jax import sharding
from brd_jax.errors import UserError
from brd_jax.io_utils import read_records, write_jsonl


def run(model: str, requests_path, out_path, mesh=None, token_budget: int = 4096,
        progress: bool = True) -> int:
  """Scores every request of `requests_path` with `model`; returns how many were written."""
  from tqdm import tqdm
  from brd_jax.checkpoints import resolve
  from brd_jax.inference.scoring import Scorer
  requests = read_records(requests_path, ("context", "continuation"))
  mesh = sharding.multi_device(mesh)
  loaded = resolve.load(model, mesh)
  if loaded.tokenizer is None:
    raise UserError(f"--model {model} has no tokenizer")
  scorer = Scorer(loaded.model, loaded.tokenizer, mesh, token_budget=token_budget)
  t0 = time.perf_counter()
  with tqdm(total=len(requests), unit="req", disable=not progress) as bar:
    def advance(n):
      bar.update(n)
      bar.set_postfix(req_per_s=f"{bar.n / (time.perf_counter() - t0):.1f}")
    results = scorer.loglik([(r["context"], r["continuation"]) for r in requests], advance)
  return write_jsonl(out_path, ({**r, "loglik": g.loglik, "n_tokens": g.n_tokens,
                                 "is_greedy": g.is_greedy} for r, g in zip(requests, results)))
