"""`brd pipeline` end to end on a tiny config: every stage, the report, skip on re-run, and only
the dependent stages after a changed setting."""
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

import tiny_teacher
from cli_run import ROOT, brd
from brd_jax.behaviors import ledger
from brd_jax.evaluation.harness import RULES, samples_path
from brd_jax.training import metrics



def bigbench_task(path: pathlib.Path, n: int = 60, seed: int = 0) -> pathlib.Path:
  """Questions about the corpus's world, each with its own three answers (words of the corpus and
  of the readings), so that the models' choices differ from document to document."""
  import random
  rng = random.Random(seed)
  words = ("Zora walked home a girl in the story person the museum was painted at dawn near the "
           "square after the storm worker friend gate none").split()
  examples = []
  for i in range(n):
    answers = list(dict.fromkeys(" ".join(rng.sample(words, rng.randrange(1, 4)))
                                 for _ in range(3)))
    examples.append({"input": f"Who walked home in {1000 + 37 * i}?", "target_scores": {
        a: int(k == i % len(answers)) for k, a in enumerate(answers)}})
  path.mkdir(parents=True, exist_ok=True)
  (path / "task.json").write_text(json.dumps({"name": "even", "examples": examples}))
  return path / "task.json"


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory, reading_teacher):
  root = tmp_path_factory.mktemp("pipe")
  teacher = reading_teacher
  (root / "text.txt").write_text(tiny_teacher.reading_text(8, seed=3))
  task = bigbench_task(root / "even")
  gin = root / "tiny.gin"
  gin.write_text(f"""
include 'models/llama_tiny.gin'
corpus.inputs = ('{root / 'text.txt'}',)
corpus.decontaminate = ()
generate.teacher = '{teacher}'
generate.max_new_tokens = 48
generate.max_attempts = 1
student.init = 'scratch'
student.tokenizer = 'bytes'
model.vocab_size = 258
data.seq_len = 64
train.steps = 4
train.batch_size = 8
train.warmup_steps = 1
train.checkpoint_every = 2
train.log_every = 1
train.tensorboard = False
eval.tasks = ('bigbench:{task}',)
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


MODELS = ("teacher", "student_init", "student_brd", "student_corpus_only")


def accuracies(work) -> dict:
  """model -> (task, rule) -> accuracy, from each eval's results.json."""
  out = {}
  for m in MODELS:
    tasks = json.loads((work / "eval" / m / "results.json").read_text())["tasks"]
    out[m] = {(t, r): v[r] for t, v in tasks.items() for r in RULES}
  return out


def test_paired_bootstrap_against_numpy_and_scipy():
  """The report's interval: a plain numpy bootstrap written here (same draws) exactly, and
  scipy.stats.bootstrap's paired percentile interval (its own resampling) within Monte-Carlo
  error."""
  from scipy import stats
  from brd_jax.pipeline_report import paired_bootstrap
  rng = np.random.default_rng(7)
  a = (rng.random(300) < 0.6).astype(float)
  b = np.where(rng.random(300) < 0.3, 1 - a, a)  # the second model disagrees on ~30%
  mean, lo, hi = paired_bootstrap(a, b)
  d = a - b
  draws = np.random.default_rng(0).integers(0, len(d), (2000, len(d)))
  assert (mean, lo, hi) == (d.mean(), *np.percentile(d[draws].mean(1), [2.5, 97.5]))
  ref = stats.bootstrap((a, b), lambda x, y: np.mean(x - y), paired=True, vectorized=False,
                        n_resamples=4000, method="percentile", random_state=1).confidence_interval
  assert lo == pytest.approx(ref.low, abs=0.012) and hi == pytest.approx(ref.high, abs=0.012)
  assert hi - lo == pytest.approx(2 * 1.96 * d.std() / np.sqrt(len(d)), rel=0.15)


def check_interval_rows(work, tasks) -> None:
  """The report's brd - corpus_only rows against a bootstrap written here: per-document hits under
  the paper's rule from the samples files, documents resampled in pairs, 2000 resamples drawn as
  `numpy.random.default_rng(0).integers`, 2.5 / 97.5 percentiles."""
  report = (work / "report.md").read_text()
  rows = report.split("## Arms minus corpus_only")[1].split("\n## ")[0]
  for t in tasks:
    hits = {}
    for m in ("student_brd", "student_corpus_only"):
      docs = [json.loads(l) for l in samples_path(work / "eval" / m, t).open()]
      hits[m] = np.array([np.argmax(np.array(d["loglik"]) / np.array(d["n_tokens"])) == d["gold"]
                          for d in docs], float)
    d = hits["student_brd"] - hits["student_corpus_only"]
    assert np.any(d != 0)  # the two students disagree on some documents
    draws = np.random.default_rng(0).integers(0, len(d), (2000, len(d)))
    lo, hi = np.percentile(d[draws].mean(1), [2.5, 97.5])
    want = f"| {len(d)} | {100 * d.mean():+.1f} | [{100 * lo:+.1f}, {100 * hi:+.1f}] |"
    assert want in rows, (want, rows)


def check_arms_differ(work) -> None:
  """The reading teacher's readings reached the BRD arm and not the control: the ledger holds the
  valid share the teacher's rule predicts, the two students trained on different data (losses),
  score documents differently (samples), and the report's numbers are not one constant."""
  pars = [json.loads(l) for p in sorted((work / "corpus" / "paragraphs").glob("*.jsonl"))
          for l in p.read_text().splitlines()]
  sentences = {s for p in pars for s in p["sentences"] if len(s.split()) >= 3}
  recs = list(ledger.read(work / "ledger"))
  assert len(recs) == 2 * len(sentences)
  for r in recs:
    assert r["valid"] == tiny_teacher.valid(r["behavior"], r["sentence"]), r
    assert r["text"] == tiny_teacher.reading(r["behavior"], r["sentence"]), r
  for b in ("ner", "qra"):
    assert any(r["valid"] and r["parsed"] for r in recs if r["behavior"] == b)
  assert not all(r["valid"] for r in recs)
  final = {a: metrics.read(work / f"train_{a}")[-1]["loss"] for a in ("brd", "corpus_only")}
  assert abs(final["brd"] - final["corpus_only"]) > 1e-3, final
  task = json.loads((work / "eval" / "student_brd" / "results.json").read_text())["tasks"]
  for t in task:
    lls = {m: [json.loads(l)["loglik"] for l in samples_path(work / "eval" / m, t).open()]
           for m in MODELS}
    assert lls["student_brd"] != lls["student_corpus_only"]
    assert lls["student_brd"] != lls["student_init"]
  acc = accuracies(work)
  assert len({v for m in acc.values() for v in m.values()}) > 2, acc
  check_interval_rows(work, list(task))
  report = (work / "report.md").read_text()
  div = report.split("## Teacher-student divergence")[1].split("##")[0]
  ce = {l.split("|")[1].strip(): float(l.split("|")[2]) for l in div.splitlines()
        if l.startswith("| student")}
  assert set(ce) == {"student_init", "student_brd", "student_corpus_only"}
  exact = {m: np.mean([v["ref_ce"] for v in json.loads(
      (work / "eval" / m / "results.json").read_text())["tasks"].values()]) for m in ce}
  assert all(abs(ce[m] - exact[m]) < 6e-4 for m in ce), (ce, exact)
  assert len({round(v, 9) for v in exact.values()}) == 3, exact
  check_data_rows(work, pars)


def check_data_rows(work, pars) -> None:
  """The report's training-data rows against counts made here. Tokens seen: the sum of every
  step's target tokens (log_every = 1 writes one metrics record a step). The control's unique
  text: its paragraphs as bytes (the bytes tokenizer: a token a byte) plus EOS, each cut to
  data.seq_len = 64. The BRD arm holds more text than the control, so it repeats it less."""
  rows = (work / "report.md").read_text().split("## Training data per arm")[1].split("\n## ")[0]
  got = {}
  for arm in ("brd", "corpus_only"):
    recs = metrics.read(work / f"train_{arm}")
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    seen = sum(int(r["tokens"]) for r in recs)
    assert recs[-1]["tokens_seen"] == seen
    row = next(l for l in rows.splitlines() if l.startswith(f"| {arm} |")).split("|")
    unique, epochs = int(row[4]), float(row[7])
    assert int(row[6]) == seen, (row, seen)
    assert epochs == pytest.approx(seen / unique, abs=0.051), row
    got[arm] = unique, epochs
  lengths = [len((p.get("text") or " ".join(p["sentences"])).encode()) + 1 for p in pars]
  assert got["corpus_only"][0] == sum(min(n, 64) for n in lengths), (got, lengths)
  cut = 1 - sum(min(n, 64) for n in lengths) / sum(lengths)
  assert f"| {100 * cut:.0f}% |" in next(l for l in rows.splitlines()
                                         if l.startswith("| corpus_only |"))
  assert got["brd"][0] > got["corpus_only"][0] and got["brd"][1] < got["corpus_only"][1], got


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
  check_arms_differ(work)
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


@pytest.mark.slow
def test_a_changed_corpus_or_ledger_retrains_and_nothing_else_does(tiny_setup):
  """Fewer paragraphs (every unit already in the ledger: generate writes nothing) must retrain;
  a decoding change (new ledger records, same paragraphs) must retrain; the teacher's and the
  initial student's evals depend on neither."""
  from brd_jax.io_utils import dir_fingerprint
  root, gin = tiny_setup
  work = root / "fingerprints"
  base = ["pipeline", "--workdir", work, "--gin_file", gin, "--no_progress", "--gin",
          "pipeline.control=False", "--gin", "pipeline.eval_teacher=False", "--gin",
          "pipeline.compare_to_teacher=False"]

  def reran(*extra):
    r = brd(*base, *extra)
    assert r.returncode == 0, r.stderr[-4000:]
    return {l.split()[1] for l in r.stdout.splitlines()
            if l.startswith("[pipeline]") and l.endswith(" ...")}
  assert reran() == {"corpus", "generate", "train_brd", "eval_student_init", "eval_student_brd"}
  ledger_fp = dir_fingerprint(work / "ledger")
  fewer = ("--gin", "corpus.max_paragraphs=10")
  assert reran(*fewer) == {"corpus", "generate", "train_brd", "eval_student_brd"}
  assert dir_fingerprint(work / "ledger") == ledger_fp  # only the paragraphs changed
  assert reran(*fewer, "--gin", "generate.max_new_tokens=47") == {
      "generate", "train_brd", "eval_student_brd"}
  assert dir_fingerprint(work / "ledger") != ledger_fp
  assert len(list(work.glob("train_brd.superseded-*"))) == 2  # earlier runs kept, not resumed


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
  # How long each stage took uninterrupted: the kill comes somewhere inside it.
  took = {p.stem: json.loads(p.read_text())["seconds"] for p in (ref / "stages").glob("*.json")}
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
      time.sleep(rng.random() * 0.5 * took[stage])  # somewhere inside the stage
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
      # Where the signal landed: the stage that had started last and is not recorded as done.
      running = [l.split()[1] for l in lines if l.startswith("[pipeline]") and l.endswith(" ...")]
      assert running and running[-1] == stage, (stage, lines)
      assert not (work / "stages" / f"{stage}.json").exists(), stage  # cut short, not done
      killed_in.append(stage)
    proc.wait()
  assert len(killed_in) >= 6 and term & set(killed_in), killed_in
  r = brd("pipeline", "--workdir", work, "--gin_file", gin, "--no_progress")
  assert r.returncode == 0, r.stderr[-4000:]
  assert _tables((work / "report.md").read_text()) == _tables((ref / "report.md").read_text())
  assert accuracies(work) == accuracies(ref)
  assert len({v for m in accuracies(ref).values() for v in m.values()}) > 2  # not one constant
  for t in json.loads((ref / "eval" / "student_brd" / "results.json").read_text())["tasks"]:
    for m in MODELS:  # per-document log-likelihoods too, not just the rounded tables
      assert samples_path(work / "eval" / m, t).read_text() == \
          samples_path(ref / "eval" / m, t).read_text(), (m, t)
  trust.survived(len(killed_in))
