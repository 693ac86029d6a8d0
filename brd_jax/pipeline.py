"""`brd pipeline`: corpus -> generate -> train (every arm x seed) -> eval (teacher, student before
training, every student) -> report. An experiment is one corpus and one ledger, read once, and the
arms trained on them: `pipeline.arms` (name -> bindings over data.* / train.* / student.*, by
default the BRD mixture and the corpus-only control on the same token budget) x `pipeline.seeds`.

Every stage is its package's own entry point, configured by gin. A finished stage leaves
WORKDIR/stages/<name>.json with the fingerprint of its settings and inputs; a re-run skips a stage
whose fingerprint is unchanged and resumes one that was cut short (each stage is resumable by
itself), so a changed setting, a new arm or a new seed re-runs what depends on it and nothing else.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time

import gin

from brd_jax import preemption, sharding
from brd_jax.data.config import DataConfig
from brd_jax.errors import Preempted, UserError
from brd_jax.experiment import PipelineConfig
from brd_jax.io_utils import (as_path, atomic_write_text, content_digest, dir_fingerprint,
                              is_url)
from brd_jax.preemption import SigtermFlag
from brd_jax.training.config import StudentConfig, TrainConfig

log = logging.getLogger(__name__)


def _bindings(*prefixes) -> list[str]:
  """The gin bindings of some configurables: what a stage's fingerprint covers."""
  return sorted(l.strip() for l in gin.config_str().splitlines()
                if l.strip().startswith(tuple(f"{p}." for p in prefixes)))


class Stages:
  """WORKDIR/stages/<name>.json: fingerprint, summary and wall time of each finished stage."""

  def __init__(self, workdir):
    self.dir = workdir / "stages"
    self.dir.mkdir(parents=True, exist_ok=True)

  def done(self, name: str, fingerprint: str) -> dict | None:
    try:
      rec = json.loads((self.dir / f"{name}.json").read_text())
    except (OSError, ValueError):
      return None
    return rec if rec.get("fingerprint") == fingerprint else None

  def run(self, name: str, fingerprint: str, fn) -> dict:
    rec = self.done(name, fingerprint)
    if rec:
      print(f"[pipeline] {name}: up to date ({rec['seconds']:.0f} s when it ran)", flush=True)
      return rec
    print(f"[pipeline] {name} ...", flush=True)
    t0 = time.time()
    summary = fn()
    if preemption.requested() or isinstance(summary, dict) and (
        summary.get("preempted") or summary.get("stopped")):
      # The stage saved its progress and stopped early: not done, so not recorded as done.
      raise Preempted(f"SIGTERM during {name}: its progress is saved; rerun to continue")
    rec = {"stage": name, "fingerprint": fingerprint, "summary": summary,
           "seconds": round(time.time() - t0, 2)}
    atomic_write_text(self.dir / f"{name}.json", json.dumps(rec, indent=1, default=str))
    print(f"[pipeline] {name}: done in {rec['seconds']:.0f} s", flush=True)
    return rec


def run(workdir, mesh, data_dir: str | None = None, progress: bool = True) -> dict:
  """Runs (or resumes, or confirms) every stage; returns the path of the report and stage times.
  On SIGTERM the stage in hand saves what it has and `Preempted` ends the run (exit 0)."""
  with SigtermFlag():  # a signal between stages, or in a stage's own flag, reaches this one too
    return _run(workdir, mesh, data_dir, progress)


def _run(workdir, mesh, data_dir, progress) -> dict:
  from brd_jax.behaviors import generate
  from brd_jax.behaviors.config import GenerateConfig
  from brd_jax.corpus import stage as corpus_stage
  from brd_jax.corpus.config import CorpusConfig
  from brd_jax.evaluation import run as eval_run
  from brd_jax.evaluation.config import EvalConfig
  workdir = as_path(workdir)
  pcfg, ccfg, gcfg = PipelineConfig(), CorpusConfig(), GenerateConfig()
  ecfg = EvalConfig()
  if data_dir:
    ecfg = dataclasses.replace(ecfg, data_dir=data_dir)
  ecfg = dataclasses.replace(ecfg, log_samples=True)  # the report's paired bootstrap needs them
  if not gcfg.teacher:
    raise UserError("generate.teacher is not set (the teacher the pipeline reads with)")
  paragraphs, ledger_dir = workdir / "corpus" / "paragraphs", workdir / "ledger"
  distill_dir = workdir / "task_distill" if pcfg.task_distill else None
  runs = pcfg.runs(dataclasses.replace(
      DataConfig(), paragraphs_dir=str(paragraphs), ledger_dir=str(ledger_dir),
      task_distill_dir=distill_dir and str(distill_dir),
      # arms and seeds share prepared examples (one set per data settings, not per run)
      prepared_dir=DataConfig().prepared_dir or (None if is_url(workdir)
                                                 else str(workdir / "prepared"))),
      TrainConfig(), StudentConfig())
  pcfg.check_runs(runs, gcfg.behaviors)  # bad arms fail now, before the ledger is paid for
  eval_run.check(ecfg)  # missing evaluation data fails now, not after training
  from brd_jax.evaluation import tasks as tasks_lib
  for t in pcfg.task_distill:
    tasks_lib.prompts(t, ecfg.data_dir or None)
  stages = Stages(workdir)

  from brd_jax.evaluation import task_corpus
  ccfg, eval_texts = task_corpus.prepare(ccfg, workdir / "corpus", ecfg.data_dir or None)
  corpus = stages.run("corpus", content_digest("corpus", _bindings("corpus"), {
      t: content_digest(v) for t, v in eval_texts.items()}),
      lambda: corpus_stage.run(ccfg, workdir / "corpus", eval_texts, progress))
  fp_par = corpus_stage.read_manifest(workdir / "corpus")["fingerprint"]

  gen = stages.run("generate", content_digest("generate", fp_par, _bindings("generate", "chat")),
                   lambda: generate.run(gcfg, paragraphs, ledger_dir, sharding.host_mesh(), progress))
  fp_ledger = dir_fingerprint(ledger_dir)
  if distill_dir:
    from brd_jax.behaviors import task_distill
    fp_distill = content_digest("task_distill", gcfg.teacher, list(pcfg.task_distill),
                                ecfg.data_dir, _bindings("eval"))
    stages.run("task_distill", fp_distill, lambda: task_distill.run(
        gcfg.teacher, pcfg.task_distill, distill_dir, ecfg.data_dir or None, mesh,
        ecfg.token_budget, progress))
    fp_ledger = content_digest(fp_ledger, fp_distill)

  fp_train = {}
  for name, (_, seed, dcfg, tcfg, scfg) in runs.items():
    # An arm's own train / student settings and a seed enter its fingerprint; the default arms'
    # fingerprints are those of the two-arm pipeline before arms existed.
    own = {k: v for k, v in pcfg.arm_bindings()[runs[name][0]].items()
           if not k.startswith("data.") and k != "seeds"}
    fp_train[name] = content_digest(
        "train", name, fp_par, fp_ledger, _fields(dcfg),
        _bindings("train", "student", "model", "mesh"),
        *([own, seed] if own or seed is not None else []))
    stages.run(f"train_{name}", fp_train[name], lambda n=name, d=dcfg, t=tcfg, s=scfg: _train(
        workdir / f"train_{n}", mesh, t, d, s, progress, fp_train[n]))

  models = {}
  if pcfg.eval_teacher:
    models["teacher"] = gcfg.teacher
  if pcfg.eval_student_init:
    models["student_init"] = "student_init"
  for name in runs:
    models[f"student_{name}"] = str(workdir / f"train_{name}")
  fp_eval = content_digest("eval", _bindings("eval"), ecfg.data_dir)
  for name, spec in models.items():
    cfg = ecfg
    if name.startswith("student") and pcfg.compare_to_teacher:
      cfg = dataclasses.replace(ecfg, reference_model=gcfg.teacher)
    upstream = fp_train.get(name[len("student_"):], "") if name.startswith("student_") else ""
    if name == "student_init":
      upstream = content_digest(_bindings("student", "model"))
    if name == "teacher":
      upstream = content_digest(gcfg.teacher)
    stages.run(f"eval_{name}", content_digest(fp_eval, upstream, cfg.reference_model),
               lambda s=spec, c=cfg, n=name: _eval(s, c, workdir / "eval" / n, mesh,
                                                   StudentConfig(), progress, n))

  from brd_jax import pipeline_report
  report, headline = pipeline_report.write(
      workdir, list(models), {n: r[0] for n, r in runs.items()}, pcfg.reference_arm(),
      pcfg.paper, pcfg.paper_source)
  return {"report": str(report), "headline": headline,
          "stages": {p.stem: json.loads(p.read_text())["seconds"]
                     for p in sorted(stages.dir.glob("*.json"), key=lambda p: p.name)},
          "corpus_paragraphs": corpus.get("summary", {}).get("paragraphs"),
          "ledger_remaining": gen.get("summary", {}).get("remaining")}


def _fields(dcfg) -> dict:
  """The data settings a training fingerprint covers (an unset new field leaves it as it was)."""
  from brd_jax.training.loop import FEED  # another input pipeline is another data stream
  return {**{k: v for k, v in dataclasses.asdict(dcfg).items()
             if not (k in ("task_distill_dir", "export_dir") and v is None)
             and k != "prepared_dir"  # where the prepared examples live, not what they are
             and not (k == "shard_paragraphs" and v == DataConfig.shard_paragraphs)},
          "feed": FEED}


def _train(workdir, mesh, tcfg, dcfg, scfg, progress, fingerprint: str) -> dict:
  """Trains in workdir, resuming a run of the same fingerprint. A run of another one (its data or
  settings changed since) is moved aside, not resumed (the trainer refuses a changed data stream)
  and not deleted."""
  from brd_jax.training import loop
  mark = workdir / "pipeline_fingerprint"
  old = mark.read_text().strip() if mark.exists() else ""
  if old and old != fingerprint:
    aside = workdir.with_name(f"{workdir.name}.superseded-{old}")
    workdir.rename(aside)
    print(f"[pipeline] {workdir.name}: its data or settings changed; the earlier run is kept in "
          f"{aside}", flush=True)
  workdir.mkdir(parents=True, exist_ok=True)
  atomic_write_text(mark, fingerprint + "\n")
  return loop.run(workdir, mesh, tcfg, dcfg, scfg, progress=progress)


def _eval(spec, cfg, out, mesh, scfg, progress, name) -> dict:
  from brd_jax.evaluation import run as eval_run
  model = spec
  if spec == "student_init":  # the student as training starts: built the way training builds it
    from brd_jax.checkpoints import resolve
    from brd_jax.training import student
    m, mcfg, tok, prov = student.init(scfg, sharding.multi_device(mesh))
    model = resolve.Loaded(m, mcfg, tok, content_digest(prov, dataclasses.asdict(scfg)), "student_init")
  results = eval_run.run(cfg, model, out, mesh, progress, name=name)
  return {t: {k: v for k, v in r.items() if not k.endswith("_stderr")}
          for t, r in results.items()}
