"""`brd bench eval`: `brd loglik`'s scorer vs lm-evaluation-harness's HF backend (HFLM).

The same SmolLM2-135M-Instruct weights (exported to an HF dir for lm-eval), fp32, on the same
requests: the first 100 RTE, 100 SST-2 and 56 CB documents of the official files with lm-eval's
prompts, every candidate a request (>= 500 requests of mixed lengths). Each side scores a warm-up
slice first (compilation for the project), then the whole set once, timed. lm-eval runs with
batch_size 32 (its default is 1, which would flatter the project).
"""
from __future__ import annotations

import pathlib
import tempfile
import time

import numpy as np

from brd_jax.benchmarks import report
from brd_jax.errors import UserError


def requests(data_dir=None) -> list[tuple[str, str]]:
  from brd_jax.evaluation import tasks  # pylint: disable=import-outside-toplevel
  out = []
  for task, n in (("rte", 100), ("sst2", 100), ("cb", 56)):
    out += [(d.context, c) for d in tasks.load(task, data_dir, n) for c in d.choices]
  return out


def run(model_spec: str = "asset:smollm2-135m-instruct", peer_batch: int = 32,
        token_budget: int = 4096, json_path: str | None = None, data_dir=None) -> dict:
  try:
    from lm_eval.api.instance import Instance  # pylint: disable=import-outside-toplevel
    from lm_eval.models.huggingface import HFLM  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise UserError("`brd bench eval` needs lm-evaluation-harness: pip install -e '.[bench]'"
                    ) from None
  from brd_jax.checkpoints import hf, resolve  # pylint: disable=import-outside-toplevel
  from brd_jax.inference.scoring import Scorer  # pylint: disable=import-outside-toplevel

  reqs = requests(data_dir)
  loaded = resolve.load(model_spec)
  scorer = Scorer(loaded.model, loaded.tokenizer, None, token_budget=token_budget)
  warm = reqs[::25]

  with tempfile.TemporaryDirectory() as tmp:
    hf.export_dir(loaded.model, pathlib.Path(tmp), loaded.tokenizer)
    lm = HFLM(pretrained=tmp, device="cpu", dtype="float32", batch_size=peer_batch)

    def peer(rs):
      inst = [Instance("loglikelihood", {}, r, i) for i, r in enumerate(rs)]
      return [(float(ll), bool(g)) for ll, g in lm.loglikelihood(inst, disable_tqdm=True)]

    def ours(rs):
      return [(g.loglik, g.is_greedy) for g in scorer.loglik(rs)]

    timings, results = {}, {}
    for name, fn in (("project", ours), ("peer", peer)):
      fn(warm)
      t = time.perf_counter()
      results[name] = fn(reqs)
      timings[name] = time.perf_counter() - t
      print(f"{name}: {len(reqs)} requests in {timings[name]:.1f}s")

  rps = {k: len(reqs) / v for k, v in timings.items()}
  a = np.array([x[0] for x in results["project"]])
  b = np.array([x[0] for x in results["peer"]])
  diff = float(np.abs(a - b).max())
  greedy = float(np.mean([x[1] == y[1] for x, y in zip(results["project"], results["peer"])]))
  return report(
      "loglik_requests_per_s", rps["project"], rps["peer"],
      {"max_abs_loglik_diff": diff, "is_greedy_agreement": greedy, "n_requests": len(reqs),
       "peer_batch_size": peer_batch, "dtype": "float32"},
      [("model", model_spec), ("requests", f"{len(reqs)} (RTE 100, SST-2 100, CB 56 docs)"),
       ("brd_jax requests/s", f"{rps['project']:.2f}"),
       (f"lm-eval HFLM (batch {peer_batch}) requests/s", f"{rps['peer']:.2f}"),
       ("max |loglik diff|", f"{diff:.2e}"), ("is_greedy agreement", f"{greedy:.3f}")], json_path)
