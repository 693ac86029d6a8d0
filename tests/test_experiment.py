"""`brd pipeline` as an experiment on the tiny config: arms x seeds on one corpus and one ledger,
the report's interval, divergence and beside-the-paper rows against numpy written here, an added
arm run alone, a killed arm resumed. Its own file so that xdist (--dist loadfile) runs it beside
test_pipeline.py's stage tests, not after them on the same worker."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from cli_run import ROOT, brd
from brd_jax.behaviors import ledger
from brd_jax.evaluation.harness import samples_path
from brd_jax.training import metrics
from test_pipeline import _tables, bigbench_task, stage_times, tiny_setup  # noqa: F401


ARMS3 = ("{'brd': {}, 'tdist_brd': {'data.mixture': 'brd_mix_task_distill'}, "
         "'corpus_only': {'data.mixture': 'brd_corpus_only'}}")
ARMS4 = ARMS3[:-1] + ", 'no_ner': {'data.mixture': 'brd_mix_no_ner'}}"
PAPER = {"brd": 57.5, "corpus_only": 47.1}


def _ran(stdout: str) -> set:
  return {l.split()[1] for l in stdout.splitlines()
          if l.startswith("[pipeline]") and l.endswith(" ...")}


def _hits_of(work, run, task) -> np.ndarray:
  docs = [json.loads(l) for l in samples_path(work / "eval" / f"student_{run}", task).open()]
  return np.array([np.argmax(np.array(d["loglik"]) / np.array(d["n_tokens"])) == d["gold"]
                   for d in docs], float)


def check_arm_rows(work, arm, seeds, tasks) -> None:
  """The report's rows for `arm` minus corpus_only against numpy written here: hits averaged
  over the seeds per document, 2000 paired resamples per task from default_rng(0), and for the
  average over tasks one default_rng(0) drawing each task's documents in turn."""
  rows = (work / "report.md").read_text().split("## Arms minus corpus_only")[1].split("\n## ")[0]
  diffs = []
  for t in tasks:
    a = np.mean([_hits_of(work, f"{arm}-s{s}", t) for s in seeds], axis=0)
    b = np.mean([_hits_of(work, f"corpus_only-s{s}", t) for s in seeds], axis=0)
    d = a - b
    diffs.append(d)
    draws = np.random.default_rng(0).integers(0, len(d), (2000, len(d)))
    lo, hi = np.percentile(d[draws].mean(1), [2.5, 97.5])
    want = f"| {arm} | {t} | {len(seeds)} | {len(d)} | {100 * d.mean():+.1f} | "
    assert f"{want}[{100 * lo:+.1f}, {100 * hi:+.1f}] |" in rows, (want, rows)
  rng = np.random.default_rng(0)
  per_task = [d[rng.integers(0, len(d), (2000, len(d)))].mean(1) for d in diffs]
  avg = np.mean(per_task, axis=0)
  lo, hi = np.percentile(avg, [2.5, 97.5])
  point = np.mean([d.mean() for d in diffs])
  want = (f"| {arm} | Avg | {len(seeds)} | {sum(map(len, diffs))} | {100 * point:+.1f} | "
          f"[{100 * lo:+.1f}, {100 * hi:+.1f}] |")
  assert want in rows, (want, rows)
  assert any(np.any(d != 0) for d in diffs)  # the arms disagree somewhere
  check_divergence_rows(work, arm, seeds, tasks)


def check_divergence_rows(work, arm, seeds, tasks) -> None:
  """The CE / KL rows against numpy written here: per-document sums averaged over seeds, a
  task's value sum(arm - ref) / sum(tokens) over 2000 paired resamples from default_rng(0), the
  average over tasks drawing each task's documents in turn (CE's draws, then KL's)."""
  rows = (work / "report.md").read_text().split("## Divergence to the teacher: arms minus "
                                                "corpus_only")[1].split("\n## ")[0]

  def sums(run, t):
    return np.array([json.loads(l)["ref"] for l in
                     samples_path(work / "eval" / f"student_{run}", t).open()])
  per = {t: (np.mean([sums(f"{arm}-s{s}", t) for s in seeds], 0),
             np.mean([sums(f"corpus_only-s{s}", t) for s in seeds], 0)) for t in tasks}
  cells = {t: [] for t in (*tasks, "Avg")}
  for col in (0, 1):
    for t, (a, r) in per.items():
      rng = np.random.default_rng(0)
      draws = rng.integers(0, len(a), (2000, len(a)))
      d, w = a[:, col] - r[:, col], r[:, 3]
      lo, hi = np.percentile(d[draws].sum(1) / w[draws].sum(1), [2.5, 97.5])
      cells[t].append(f"{d.sum() / w.sum():+.3f} | [{lo:+.3f}, {hi:+.3f}]")
    rng = np.random.default_rng(0)
    avg = []
    for a, r in per.values():
      draws = rng.integers(0, len(a), (2000, len(a)))
      avg.append((a[:, col] - r[:, col])[draws].sum(1) / r[:, 3][draws].sum(1))
    lo, hi = np.percentile(np.mean(avg, 0), [2.5, 97.5])
    point = np.mean([(a[:, col] - r[:, col]).sum() / r[:, 3].sum() for a, r in per.values()])
    cells["Avg"].append(f"{point:+.3f} | [{lo:+.3f}, {hi:+.3f}]")
  for t, c in cells.items():
    n = sum(len(a) for a, _ in per.values()) if t == "Avg" else len(per[t][0])
    want = f"| {arm} | {t} | {len(seeds)} | {n} | {c[0]} | {c[1]} |"
    assert want in rows, (want, rows)


def check_paper_rows(work, seeds, tasks, paper) -> None:
  """The beside-the-paper table: our arms' mean accuracy over tasks (seeds averaged) from the
  samples, our Avg difference, and the paper's difference from the configured figures; an arm
  without a figure shows none. And the arms' plot exists."""
  rows = (work / "report.md").read_text().split("## Beside the paper")[1].split("\n## ")[0]
  acc = lambda arm: np.mean([100 * np.mean([_hits_of(work, f"{arm}-s{s}", t) for s in seeds])
                             for t in tasks])
  ref = acc("corpus_only")
  assert f"| corpus_only | {ref:.1f} | | | {paper['corpus_only']:.1f} | |" in rows, rows
  for arm in ("brd", "tdist_brd"):
    line = next(l for l in rows.splitlines() if l.startswith(f"| {arm} |"))
    assert line.startswith(f"| {arm} | {acc(arm):.1f} | {acc(arm) - ref:+.1f} | ["), (line, rows)
    tail = (f"| {paper[arm]:.1f} | {paper[arm] - paper['corpus_only']:+.1f} |" if arm in paper
            else "| – | – |")
    assert line.endswith(tail), (line, tail)
  assert (work / "report_arms.png").read_bytes()[:4] == b"\x89PNG"


def _kill_during(cmd, stage, ready) -> None:
  """Runs `brd pipeline ...` and SIGKILLs it inside `stage`, once `ready()` holds."""
  import signal
  import threading
  proc = subprocess.Popen([sys.executable, "-m", "brd_jax.cli", *map(str, cmd)], cwd=ROOT,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
  started = threading.Event()

  def watch():
    for line in proc.stdout:
      if line.startswith(f"[pipeline] {stage} ..."):
        started.set()
    started.set()
  threading.Thread(target=watch, daemon=True).start()
  assert started.wait(timeout=600)
  deadline = time.time() + 600
  while not ready() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before the kill"
  proc.send_signal(signal.SIGKILL)
  proc.wait()


@pytest.mark.slow
def test_an_experiment_of_three_arms_and_two_seeds_reads_once_and_adds_an_arm_alone(tiny_setup,
                                                                                   trust):
  """3 arms x 2 seeds on one corpus and one ledger: one generate stage, every unit once, six
  students that differ by arm and by seed, intervals that pool seeds (per task and on the
  average over two tasks). A fourth arm then trains and evaluates only itself, and a copy of the
  experiment killed while training that arm ends with the same report and samples."""
  import shutil
  root, gin = tiny_setup
  second = bigbench_task(root / "other", n=40, seed=5)
  work = root / "experiment"
  base = ["pipeline", "--workdir", work, "--gin_file", gin, "--no_progress",
          "--gin", "pipeline.seeds = (0, 1)", "--gin", "pipeline.eval_teacher = False",
          "--gin", f"pipeline.task_distill = ('bigbench:{second}',)", "--gin",
          f"eval.tasks = ('bigbench:{root / 'even' / 'task.json'}', 'bigbench:{second}')",
          "--gin", f"pipeline.paper = {PAPER}"]
  r = brd(*base, "--gin", f"pipeline.arms = {ARMS3}")
  assert r.returncode == 0, r.stderr[-4000:]
  runs = [f"{a}-s{s}" for a in ("brd", "tdist_brd", "corpus_only") for s in (0, 1)]
  assert sorted(stage_times(work)) == sorted(
      ["corpus", "generate", "task_distill", "eval_student_init", *(f"train_{n}" for n in runs),
       *(f"eval_student_{n}" for n in runs)])
  recs = list(ledger.read(work / "ledger"))
  keys = [(x["unit"], x["attempt"]) for x in recs]
  assert len(keys) == len(set(keys)) and {x["behavior"] for x in recs} == {"ner", "qra"}
  final = {n: metrics.read(work / f"train_{n}")[-1]["loss"] for n in runs}
  assert len({round(v, 6) for v in final.values()}) == 6, final  # every arm x seed its own run
  tasks = list(json.loads((work / "eval" / "student_brd-s0" / "results.json").read_text())["tasks"])
  assert len(tasks) == 2
  for arm in ("brd", "tdist_brd"):
    check_arm_rows(work, arm, (0, 1), tasks)
  check_paper_rows(work, (0, 1), tasks, PAPER)

  copy = root / "experiment_killed"
  shutil.copytree(work, copy)
  before = stage_times(work)
  r = brd(*base, "--gin", f"pipeline.arms = {ARMS4}")
  assert r.returncode == 0, r.stderr[-4000:]
  added = {"train_no_ner-s0", "train_no_ner-s1", "eval_student_no_ner-s0",
           "eval_student_no_ner-s1"}
  assert _ran(r.stdout) == added
  assert {k: v for k, v in stage_times(work).items() if k not in added} == before
  check_arm_rows(work, "no_ner", (0, 1), tasks)

  killed = [str(c) if c != work else copy for c in base] + ["--gin", f"pipeline.arms = {ARMS4}"]
  # killed once the first checkpoint (step 2 of 4) is committed: the rerun resumes from it
  _kill_during(killed, "train_no_ner-s1",
               lambda: (copy / "train_no_ner-s1" / "checkpoints" / "2").is_dir())
  trust.injected()
  assert not (copy / "stages" / "train_no_ner-s1.json").exists()
  r = brd(*killed)
  assert r.returncode == 0, r.stderr[-4000:]
  assert "train_no_ner-s1" in _ran(r.stdout) and "train_brd-s0" not in _ran(r.stdout)
  assert _tables((copy / "report.md").read_text()) == _tables((work / "report.md").read_text())
  for run in ("no_ner-s0", "no_ner-s1"):
    for t in tasks:
      assert samples_path(copy / "eval" / f"student_{run}", t).read_text() == \
          samples_path(work / "eval" / f"student_{run}", t).read_text(), (run, t)
  trust.survived(1)


@pytest.mark.parametrize("binding, says", [
    ("pipeline.arms = {'x': {'data.mixtur': 'brd_mix'}}", "'data.mixtur' is not a data.*"),
    ("pipeline.arms = {'x y': {}}", "arm name 'x y'"),
    ("pipeline.reference = 'nope'", "'nope' is not one of the arms"),
    ("pipeline.seeds = (1, 1)", "distinct integers"),
    ("pipeline.arms = {'a': {'data.mixture': 'brd_mix'}, 'b': {'data.mixture': 'nope'}}",
     "run b: data.mixture='nope'"),
    ("pipeline.paper = {'nope': 50.0}", "pipeline.paper['nope']=50.0: the paper's figure"),
])
def test_bad_arms_are_one_line_errors_before_any_stage(tmp_path, binding, says):
  r = brd("pipeline", "--workdir", tmp_path / "w", "--gin_file", "experiments/demo_cpu",
          "--gin", binding, "--no_progress")
  assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, \
      r.stderr[-2000:]
  assert not (tmp_path / "w" / "stages").exists() or not any((tmp_path / "w" / "stages").iterdir())
