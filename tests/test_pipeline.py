"""`brd pipeline` end to end on a tiny config: every stage, the report, skip on re-run, and only
the dependent stages after a changed setting."""
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

import tiny_teacher
from cli_run import ROOT, brd
from test_corpus import cc100_text



def bigbench_task(path: pathlib.Path, n: int = 12) -> pathlib.Path:
  examples = [{"input": f"Is {i} an even number?", "target_scores": {
      "yes": int(i % 2 == 0), "no": int(i % 2 == 1)}} for i in range(n)]
  path.mkdir(parents=True, exist_ok=True)
  (path / "task.json").write_text(json.dumps({"name": "even", "examples": examples}))
  return path / "task.json"


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("pipe")
  teacher = tiny_teacher.make(root / "teacher")
  (root / "text.txt").write_text(cc100_text(8, seed=3))
  task = bigbench_task(root / "even")
  gin = root / "tiny.gin"
  gin.write_text(f"""
include 'models/llama_tiny.gin'
corpus.inputs = ('{root / 'text.txt'}',)
corpus.decontaminate = ()
generate.teacher = '{teacher}'
generate.max_new_tokens = 8
generate.max_attempts = 1
student.init = 'scratch'
student.tokenizer = 'bytes'
model.vocab_size = 320
data.seq_len = 64
train.steps = 4
train.batch_size = 8
train.warmup_steps = 1
train.checkpoint_every = 2
train.log_every = 1
train.tensorboard = False
eval.tasks = ('bigbench:{task}',)
pipeline.compare_to_teacher = False
""")
  return root, gin


@pytest.fixture(scope="module")
def reference(tiny_setup):
  """One uninterrupted pipeline run; tests that change it put it back."""
  root, gin = tiny_setup
  r = brd("pipeline", "--workdir", root / "ref", "--gin_file", gin, "--no_progress")
  assert r.returncode == 0, r.stderr[-4000:]
  return root / "ref"


def stage_times(workdir):
  return {p.stem: json.loads(p.read_text())["fingerprint"]
          for p in (workdir / "stages").glob("*.json")}


@pytest.mark.slow
def test_pipeline_runs_every_stage_skips_on_rerun_and_reruns_only_dependents(tiny_setup,
                                                                            reference):
  _, gin = tiny_setup
  work = reference
  assert sorted(stage_times(work)) == sorted([
      "corpus", "generate", "train_brd", "train_corpus_only", "eval_teacher",
      "eval_student_init", "eval_student_brd", "eval_student_corpus_only"])
  report = (work / "report.md").read_text()
  for m in ("teacher", "student_init", "student_brd", "student_corpus_only"):
    assert f"| {m} |" in report
  assert "95% interval" in report and (work / "report_loss.png").stat().st_size > 5000
  before = {p.name: p.stat().st_mtime_ns for p in (work / "stages").glob("*.json")}
  again = brd("pipeline", "--workdir", work, "--gin_file", gin, "--no_progress")
  assert again.returncode == 0, again.stderr[-4000:]
  assert again.stdout.count("up to date") == 8
  assert {p.name: p.stat().st_mtime_ns for p in (work / "stages").glob("*.json")} == before
  changed = brd("pipeline", "--workdir", work, "--gin_file", gin, "--gin", "eval.limit=6",
                "--no_progress")
  assert changed.returncode == 0, changed.stderr[-4000:]
  reran = {l.split()[1].rstrip(":") for l in changed.stdout.splitlines()
           if l.startswith("[pipeline]") and l.endswith("...")}
  assert reran == {"eval_teacher", "eval_student_init", "eval_student_brd",
                   "eval_student_corpus_only"}
  back = brd("pipeline", "--workdir", work, "--gin_file", gin, "--no_progress")  # as it was
  assert back.returncode == 0 and back.stdout.count("up to date") == 4, back.stderr[-4000:]


def _tables(report: str) -> str:
  """The parts of a report that must not depend on interruptions: accuracy tables and the
  BRD - corpus-only intervals (times, throughput and the work dir may differ)."""
  keep = report.split("## Teacher-student")[0].split("## Training")[0]
  return "\n".join(l for l in keep.splitlines() if not l.startswith("Work dir"))


@pytest.mark.slow
def test_pipeline_killed_in_every_stage_then_rerun_gives_the_same_report(tiny_setup, reference,
                                                                          trust):
  """SIGKILL in five stages, SIGTERM in three (a clean stop: exit 0, the stage not recorded as
  done), then one rerun."""
  import random
  import signal
  import threading
  root, gin = tiny_setup
  ref = reference
  work, rng = root / "killed", random.Random(0)
  stages = ["corpus", "generate", "train_brd", "train_corpus_only", "eval_teacher",
            "eval_student_init", "eval_student_brd", "eval_student_corpus_only"]
  term = {"generate", "train_brd", "eval_student_brd"}
  killed_in = []
  for stage in stages:
    proc = subprocess.Popen([sys.executable, "-m", "brd_jax.cli", "pipeline", "--workdir",
                             str(work), "--gin_file", str(gin), "--no_progress"], cwd=ROOT,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen, started, lines = threading.Event(), [], []

    def watch(p=proc, s=stage, ev=seen, flag=started, out=lines):
      for line in p.stdout:
        out.append(line.strip())
        if line.startswith(f"[pipeline] {s} ..."):
          flag.append(True)
          ev.set()
      ev.set()  # the process ended first
    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    seen.wait(timeout=300)
    if started:
      time.sleep(rng.random() * 3)  # somewhere inside the stage
    if proc.poll() is None:
      sig = signal.SIGTERM if stage in term else signal.SIGKILL
      proc.send_signal(sig)
      err = proc.communicate()[1]
      reader.join()
      if sig == signal.SIGTERM and "SIGTERM during" in err:
        assert proc.returncode == 0, err[-3000:]
        running = [l.split()[1] for l in lines if l.endswith(" ...")][-1]
        assert f"SIGTERM during {running}" in err, err[-3000:]
        assert not (work / "stages" / f"{running}.json").exists()  # stopped early: not done
      elif sig == signal.SIGKILL and proc.returncode == -signal.SIGKILL:
        pass
      else:  # the run ended between poll() and the signal: nothing was injected
        assert proc.returncode == 0, err[-3000:]
        assert all((work / "stages" / f"{s}.json").exists() for s in stages), lines
        continue
      trust.injected()
      killed_in.append(stage)
    proc.wait()
  assert len(killed_in) >= 6 and term & set(killed_in), killed_in
  r = brd("pipeline", "--workdir", work, "--gin_file", gin, "--no_progress")
  assert r.returncode == 0, r.stderr[-4000:]
  assert _tables((work / "report.md").read_text()) == _tables((ref / "report.md").read_text())
  trust.survived(len(killed_in))
