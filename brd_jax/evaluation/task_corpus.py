"""The relaxed setting's corpus: evaluation tasks' unlabeled inputs, read as `brd eval` reads them.

With `corpus.from_tasks = ('rte', 'cb:validation', ...)` a corpus run (`brd corpus`, `brd pipeline`)
reads, besides `corpus.inputs`, one JSONL file per task written into its workdir's inputs/: one
paragraph per example (the input fields joined; labels are never read). Those tasks are then not
contamination to remove, and single sentences are kept. The corpus stage itself never imports
the evaluation package: what it needs comes in through `prepare`.
"""
from __future__ import annotations

import dataclasses

from brd_jax.corpus.config import CorpusConfig
from brd_jax.errors import UserError
from brd_jax.evaluation import tasks as tasks_lib
from brd_jax.io_utils import as_path, is_url, write_jsonl


def _split(spec: str) -> tuple[str, str | None]:
  """'rte:validation' -> ('rte', 'validation'); a bigbench:NAME keeps its colon."""
  if spec.startswith("bigbench:"):
    return spec, None
  name, _, split = spec.partition(":")
  return name, split or None


def prepare(cfg: CorpusConfig, workdir, data_dir=None) -> tuple[CorpusConfig, dict]:
  """The settings a corpus run uses and the texts it decontaminates against (task -> inputs)."""
  if cfg.from_tasks and is_url(workdir):
    raise UserError("corpus.from_tasks writes the tasks' inputs into the workdir: use a local "
                    "--workdir")
  workdir, names = as_path(workdir), []
  for spec in cfg.from_tasks:
    name, split = _split(spec)
    if not tasks_lib.is_known(name):
      raise UserError(f"corpus.from_tasks: unknown task {name!r} (supported: "
                      f"{', '.join(tasks_lib.TASKS)}, bigbench:NAME)")
    rows = tasks_lib.inputs(name, data_dir, split)
    path = workdir / "inputs" / f"task-{name.replace(':', '_').replace('/', '_')}.jsonl"
    write_jsonl(path, ({"id": f"{name}:{k}", "text": " ".join(x.strip() for x in fields)}
                       for k, fields in enumerate(rows)))
    cfg = dataclasses.replace(cfg, inputs=(*cfg.inputs, str(path)))
    names.append(name)
  if names:
    cfg = dataclasses.replace(
        cfg, id_field="id", min_sentences=1, require_terminal_punct=False,
        decontaminate=tuple(t for t in cfg.decontaminate if t not in names))
  return cfg, tasks_lib.input_texts(cfg.decontaminate, data_dir)
