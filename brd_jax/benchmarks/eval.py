"""`brd bench eval`: `brd eval` vs lm-evaluation-harness's `simple_evaluate`, task by task.

Both sides score the same documents of the official files: the project through its harness
(`harness.evaluate`, a fresh cache), lm-eval through its own shipped task definitions (the task
YAML and document processing, fed the same rows) and its HF backend (HFLM) on an HF export of
the same weights, fp32, on this CPU. Each side first scores a few documents of every task
(compilation for the project, allocator warm-up for torch), then every task once, timed.
Reported per task: wall time of both, the ratio, and acc / acc_norm of both.
"""
from __future__ import annotations

import json
import pathlib
import tempfile
import time

from brd_jax.benchmarks import report
from brd_jax.errors import UserError

# project task -> lm-eval 0.4.13 task YAML (under lm_eval/tasks)
LM_EVAL = {"rte": "super_glue/rte/default.yaml", "cb": "super_glue/cb/default.yaml",
           "sst2": "glue/sst2/default.yaml", "boolq": "super_glue/boolq/default.yaml",
           "xnli": "xnli/xnli_en.yaml", "pawsx": "paws-x/paws_en.yaml"}
_LABELS = {"rte": {"entailment": 0, "not_entailment": 1},
           "cb": {"entailment": 0, "contradiction": 1, "neutral": 2}}


def hf_rows(task: str, rows: list[dict]) -> list[dict]:
  """Rows in the Hugging Face schema of lm-eval's datasets (integer labels)."""
  def label(v):
    if task == "boolq":
      return int(v in (True, 1, "true", "True"))
    return int(_LABELS.get(task, {}).get(v, v))
  return [{**r, "label": label(r["label"])} for r in rows]


def lm_eval_task(task: str, rows: list[dict], tmp: pathlib.Path, acc_norm: bool = True):
  """lm-eval's own Task for `task`, reading `rows` (written to a local JSON file) as the split it
  evaluates; with `acc_norm`, lm-eval's metric code also reports acc_norm."""
  import lm_eval
  from lm_eval.api.task import ConfigurableTask
  from lm_eval.tasks._yaml_loader import load_yaml
  cfg = load_yaml(pathlib.Path(lm_eval.__file__).parent / "tasks" / LM_EVAL[task])
  path = pathlib.Path(tmp) / f"{task}.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in hf_rows(task, rows)))
  key = "test_split" if cfg.get("test_split") else "validation_split"
  split = cfg[key]
  cfg.update(dataset_path="json", dataset_name=None,
             dataset_kwargs={"data_files": {split: str(path)}},
             training_split=None, validation_split=None, test_split=None, fewshot_split=None)
  cfg[key] = split
  if acc_norm and not any(m["metric"] == "acc_norm" for m in cfg["metric_list"]):
    cfg["metric_list"] = [*cfg["metric_list"], {"metric": "acc_norm"}]
  return ConfigurableTask(config=cfg)


def run(model_spec: str = "asset:smollm2-135m-instruct", task_names=tuple(LM_EVAL),
        data_dir=None, limit: int | None = 400, peer_batch: int = 8, token_budget: int = 4096,
        json_path: str | None = None) -> dict:
  try:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
  except ImportError:
    raise UserError("`brd bench eval` needs lm-evaluation-harness: pip install -e '.[bench]'"
                    ) from None
  from brd_jax.checkpoints import hf, resolve
  from brd_jax.evaluation import harness, tasks
  from brd_jax.inference.scoring import Scorer
  unknown = [t for t in task_names if t not in LM_EVAL]
  if unknown:
    raise UserError(f"--tasks {','.join(unknown)}: lm-eval peers exist for {', '.join(LM_EVAL)}")
  data = pathlib.Path(data_dir) if data_dir else tasks.default_data_dir()
  docs = {t: tasks.load(t, data, limit) for t in task_names}  # fails here on missing files
  loaded = resolve.load(model_spec)
  scorer = Scorer(loaded.model, loaded.tokenizer, None, token_budget=token_budget)

  def ours(task, n, out):
    return harness.evaluate(scorer, loaded.fingerprint, [task], out, data, n)[task]

  def peer(t, n, model=None):
    r = lm_eval.simple_evaluate(model=model or lm, tasks=[t], limit=n, bootstrap_iters=0,
                                log_samples=False, verbosity="ERROR")
    return r["results"][t.config.task]

  rows, per_task = [], {}
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    hf.export_dir(loaded.model, tmp / "hf", loaded.tokenizer)
    lm = HFLM(pretrained=str(tmp / "hf"), device="cpu", dtype="float32", batch_size=peer_batch)
    from brd_jax.evaluation.lm_eval_model import BrdLM  # the third column: lm-eval on our scorer
    lm_ours = BrdLM(pretrained=str(tmp / "hf"), token_budget=token_budget)
    peers = {t: lm_eval_task(t, tasks.ROWS[t](data), tmp) for t in task_names}
    for t in task_names:  # warm-up: a few documents of every task, on both sides
      ours(t, 4, tmp / "warm" / t)
      peer(peers[t], 4)
      peer(peers[t], 4, lm_ours)
    for t in task_names:
      n = len(docs[t])
      t0 = time.perf_counter()
      a = ours(t, n, tmp / "timed" / t)
      s_ours = time.perf_counter() - t0
      t0 = time.perf_counter()
      b = peer(peers[t], n)
      s_peer = time.perf_counter() - t0
      t0 = time.perf_counter()
      c = peer(peers[t], n, lm_ours)
      s_backend = time.perf_counter() - t0
      per_task[t] = {"docs": n, "project_s": round(s_ours, 2), "peer_s": round(s_peer, 2),
                     "lm_eval_brd_jax_s": round(s_backend, 2), "ratio": s_peer / s_ours,
                     "backend_ratio": s_peer / s_backend,
                     "acc": [a["acc"], b["acc,none"], c["acc,none"]],
                     "acc_norm": [a["acc_norm"], b["acc_norm,none"], c["acc_norm,none"]]}
      print(f"{t}: {n} docs, brd {s_ours:.1f} s, lm-eval {s_peer:.1f} s ({s_peer / s_ours:.2f}x), "
            f"lm-eval --model brd_jax {s_backend:.1f} s ({s_peer / s_backend:.2f}x)", flush=True)
      rows.append((f"{t} ({n} docs)", f"brd {s_ours:.1f} s, lm-eval {s_peer:.1f} s: "
                   f"{s_peer / s_ours:.2f}x; lm-eval --model brd_jax {s_backend:.1f} s: "
                   f"{s_peer / s_backend:.2f}x; acc {a['acc']:.4f} / {b['acc,none']:.4f} / "
                   f"{c['acc,none']:.4f}, acc_norm {a['acc_norm']:.4f} / "
                   f"{b['acc_norm,none']:.4f} / {c['acc_norm,none']:.4f}"))
  total = sum(p["docs"] for p in per_task.values())
  return report(
      "eval_docs_per_s", total / sum(p["project_s"] for p in per_task.values()),
      total / sum(p["peer_s"] for p in per_task.values()),
      {"tasks": per_task, "min_task_ratio": min(p["ratio"] for p in per_task.values()),
       "backend_docs_per_s": total / sum(p["lm_eval_brd_jax_s"] for p in per_task.values()),
       "columns": ["brd eval", "lm-eval --model hf", "lm-eval --model brd_jax"],
       "peer_batch_size": peer_batch, "dtype": "float32", "limit": limit},
      [("model", model_spec), ("lm-eval", f"{lm_eval.__version__} simple_evaluate, HFLM batch "
                               f"{peer_batch}"), *rows,
       ("slowest task (lm-eval s / brd s)", f"{min(p['ratio'] for p in per_task.values()):.2f}x")],
      json_path, model_cfg=loaded.model.cfg, kernel_rows=token_budget)
