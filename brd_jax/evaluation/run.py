"""The eval stage's entry point: `run(cfg, model, out_dir, mesh)` -> per-task results."""
from __future__ import annotations


from brd_jax import sharding
from brd_jax.errors import UserError
from brd_jax.evaluation import tasks as tasks_lib
from brd_jax.evaluation.config import EvalConfig
from brd_jax.io_utils import as_path


def check(cfg: EvalConfig) -> None:
  """Fails on missing or unreadable task data before any model is loaded (the settings
  themselves are checked when the config is built)."""
  for t in cfg.tasks:
    tasks_lib.load(t, cfg.data_dir or None, 1)


def run(cfg: EvalConfig, model, out_dir, mesh=None, progress: bool = True,
        name: str | None = None) -> dict:
  """Scores `model` (a --model spec, or a `resolve.Loaded`) on cfg.tasks into out_dir."""
  from tqdm import tqdm
  from brd_jax.checkpoints import resolve
  from brd_jax.evaluation import harness, report
  from brd_jax.inference.scoring import Scorer
  check(cfg)
  mesh = sharding.multi_device(mesh)
  loaded = resolve.load(model, mesh) if isinstance(model, str) else model
  if loaded.tokenizer is None:
    raise UserError(f"--model {name or model}: no tokenizer")
  scorer = Scorer(loaded.model, loaded.tokenizer, mesh, token_budget=cfg.token_budget)
  out = as_path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  divergence = None
  if cfg.reference_model:
    from brd_jax.evaluation.divergence import Divergence, check_compatible
    ref = resolve.load(cfg.reference_model)
    check_compatible(loaded.model, loaded.tokenizer, ref.model, ref.tokenizer or loaded.tokenizer)
    divergence = Divergence(loaded.model, ref.model, loaded.tokenizer, cfg.token_budget)
  results = harness.evaluate(
      scorer, loaded.fingerprint, list(cfg.tasks), out, cfg.data_dir or None, cfg.limit or None,
      cfg.log_samples,
      (lambda task, n: tqdm(total=n, desc=task, unit="req")) if progress else None,
      divergence, cfg.num_fewshot, cfg.chunk_chars, cfg.divergence_limit)
  report.write(out, name or (model if isinstance(model, str) else loaded.source), results,
               {"fingerprint": loaded.fingerprint, "limit": cfg.limit or None,
                "num_fewshot": cfg.num_fewshot, "reference_model": cfg.reference_model or None,
                "divergence_limit": cfg.divergence_limit or None})
  return results
