"""Task distillation: the teacher's zero-shot answer to each unlabeled task input, as training text.

For every example of a task, its prompt and candidates are built as `brd eval` builds them
(`evaluation.tasks.prompts`, which never reads a label); the teacher scores each candidate and
the one with the highest mean per-token log-prob (the paper's rule, `acc_mean_token`) is its
answer. The example `prompt + answer` becomes a training text (`data.task_distill_dir`, task
`brd_tdist`). Scores are cached per request as `brd eval` caches them, so a killed run resumes.

Output, OUT_DIR/: `<task>.jsonl` lines {"id", "task", "index", "text", "choice", "loglik",
"n_tokens"} (index: the example's position in the task; choice: the teacher's candidate), and
manifest.json {"teacher", "tasks": {task: count}}. A finished task file is written atomically.
"""
from __future__ import annotations

import json

import numpy as np

from brd_jax.errors import UserError
from brd_jax.io_utils import as_path, atomic_write_text

MANIFEST = "manifest.json"


def task_file(directory, task: str):
  """OUT_DIR/<task>.jsonl, the task made a file name as eval's samples files are."""
  from brd_jax.evaluation.harness import samples_path
  return as_path(directory) / samples_path(directory, task).name[len("samples_"):]


def teacher_choice(loglik, n_tokens) -> int:
  """The paper's rule: the candidate with the highest mean per-token log-prob."""
  return int(np.argmax(np.asarray(loglik) / np.asarray(n_tokens, np.float64)))


def examples(task: str, docs, lls, ntoks) -> list[dict]:
  from brd_jax.data.formatting import example_id
  out = []
  for i, (d, ll, nt) in enumerate(zip(docs, lls, ntoks)):
    c = teacher_choice(ll, nt)
    out.append({"id": example_id("tdist", task, i, d.context), "task": task, "index": i,
                "text": d.context + d.choices[c], "choice": c, "loglik": ll, "n_tokens": nt})
  return out


def run(teacher, tasks, out_dir, data_dir=None, mesh=None, token_budget: int = 4096,
        progress: bool = True) -> dict:
  """Writes the teacher's answers to every example of `tasks` into out_dir; returns the manifest.

  teacher: a --model spec or a `resolve.Loaded`."""
  from tqdm import tqdm
  from brd_jax import sharding
  from brd_jax.checkpoints import resolve
  from brd_jax.evaluation import harness, tasks as tasks_lib
  from brd_jax.inference.scoring import Scorer
  from brd_jax.preemption import SigtermFlag
  if not tasks:
    raise UserError("task distillation needs at least one task")
  docs = {t: tasks_lib.prompts(t, data_dir) for t in tasks}  # bad task data fails before loading
  for t, d in docs.items():
    if not d:
      raise UserError(f"task distillation: task {t} has no examples")
  mesh = sharding.multi_device(mesh)
  loaded = resolve.load(teacher, mesh) if isinstance(teacher, str) else teacher
  if loaded.tokenizer is None:
    raise UserError(f"task distillation: teacher {teacher} has no tokenizer")
  out = as_path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  scorer = Scorer(loaded.model, loaded.tokenizer, mesh, token_budget=token_budget)
  cache = harness.Cache(out / "cache" / f"{loaded.fingerprint}.jsonl")
  bars = (lambda task, n: tqdm(total=n, desc=f"task distillation {task}", unit="req")) \
      if progress else None
  counts = {}
  with SigtermFlag() as stop:
    for t, d in docs.items():
      harness.score(scorer, d, cache, stop, t, bars)
      exs = examples(t, d, *harness.cached_scores(d, cache))
      atomic_write_text(task_file(out, t),
                        "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in exs))
      counts[t] = len(exs)
  manifest = {"teacher": loaded.fingerprint, "tasks": counts}
  atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
  return manifest


def read(directory) -> list[dict]:
  """The training texts of a finished task-distillation directory ({"id", "text"})."""
  from brd_jax.io_utils import iter_jsonl
  d = as_path(directory)
  if not (d / MANIFEST).exists():
    raise UserError(f"data.task_distill_dir={d}: no {MANIFEST} (task distillation has not "
                    "finished there)")
  manifest = json.loads((d / MANIFEST).read_text())
  out = []
  for t in manifest["tasks"]:
    out += [{"id": r["id"], "text": r["text"]} for _, r in iter_jsonl(task_file(d, t))]
  return out
