"""Faults inside a run: a corrupted newest checkpoint, a non-finite loss, an output directory that
cannot be written, `brd eval` killed and rerun. Each injected fault counts in the trust line."""
import json
import logging
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import brd_corpus
from brd_jax import config, sharding
from brd_jax.errors import UserError
from brd_jax.training import metrics
from test_training import TINY, tiny_bindings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return brd_corpus.make(tmp_path_factory.mktemp("corpus"), n_paragraphs=40)


def _train(workdir, corpus, steps, **extra):
  from brd_jax.training import loop
  config.parse(TINY, tiny_bindings(*corpus, **{"train.steps": steps, "train.checkpoint_every": 5,
                                               "train.keep_checkpoints": 4, **extra}),
               finalize=False)
  return loop.run(workdir, sharding.make_mesh((1, 1, 1), jax.devices()[:1]), progress=False)


def _biggest_file(d):
  return max((p for p in d.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_corrupted_newest_checkpoints_are_set_aside_and_the_last_good_one_restored(
    tmp_path, corpus, caplog, trust):
  work = tmp_path / "w"
  _train(work, corpus, 15)
  ck = work / "checkpoints"
  assert sorted(p.name for p in ck.iterdir()) == ["10", "15", "5"]
  full = {r["step"]: r["loss"] for r in metrics.read(work)}
  # Step 15: its largest parameter file cut in half; step 10: its metadata overwritten.
  big = _biggest_file(ck / "15" / "params")
  big.write_bytes(big.read_bytes()[:big.stat().st_size // 2])
  (ck / "10" / "meta" / "metadata").write_text('{"model": {"vocab')
  trust.injected(2)
  with caplog.at_level(logging.WARNING):
    summary = _train(work, corpus, 20)
  warned = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
  assert len(warned) == 2 and str(ck / "15") in warned[0] and str(ck / "10") in warned[1]
  assert summary["resumed_from"] == 5 and summary["steps"] == 20
  assert (ck / "15.unreadable").is_dir() and (ck / "10.unreadable").is_dir()  # kept to inspect
  assert metrics.events(work)[-1]["set_aside"] == [str(ck / "15"), str(ck / "10")]
  # Steps 6-15 were redone from step 5 and equal the first run's.
  redone = {r["step"]: r["loss"] for r in metrics.records(work) if r["attempt"] == 1
            and "event" not in r}
  assert sorted(redone) == list(range(6, 21))
  for s in range(6, 16):
    assert redone[s] == pytest.approx(full[s], rel=1e-6), s
  assert {"15", "20"} <= {p.name for p in ck.iterdir()}
  trust.survived(2)


def test_no_readable_checkpoint_is_an_error_not_a_restart(tmp_path, corpus, trust):
  work = tmp_path / "w"
  _train(work, corpus, 5)
  (work / "checkpoints" / "5" / "meta" / "metadata").write_bytes(b"\x00\xff")
  trust.injected()
  with pytest.raises(UserError, match="no checkpoint could be read"):
    _train(work, corpus, 10)
  assert [e["event"] for e in metrics.events(work)] == ["start"]  # no silent fresh start
  trust.survived()


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(
    tmp_path, corpus, monkeypatch, trust):
  """A hook the test installs poisons the parameters after step 12 (as an overflow would)."""
  from brd_jax.training import step as step_lib
  real = step_lib.make_train_step

  def poisoning(*args, **kw):
    step_fn = real(*args, **kw)

    def step(state, batch):
      state, m = step_fn(state, batch)
      if int(state["step"]) == 12:
        state = {**state, "params": jax.tree.map(lambda x: x * np.nan, state["params"])}
      return state, m
    return step
  monkeypatch.setattr(step_lib, "make_train_step", poisoning)
  work = tmp_path / "w"
  trust.injected()
  with pytest.raises(UserError, match=r"step 15: the loss is nan.*last good checkpoint is step 10"):
    _train(work, corpus, 30, **{"train.log_every": 100})
  ck = work / "checkpoints"
  assert sorted(int(p.name) for p in ck.iterdir()) == [5, 10]  # nothing saved after the NaN
  monkeypatch.setattr(step_lib, "make_train_step", real)
  summary = _train(work, corpus, 15, **{"train.log_every": 100})
  assert summary["resumed_from"] == 10 and np.isfinite(metrics.read(work)[-1]["loss"])
  trust.survived()


# ---------------------------------------------------------------- a full output location
# RLIMIT_FSIZE makes every write past N bytes fail with EFBIG, as a full disk fails with ENOSPC
# (Python ignores SIGXFSZ, so the write raises). Running as root, a read-only directory cannot be
# simulated by permissions; a file that cannot grow can.

def _with_file_size_limit(nbytes, cmd):
  """CMD with RLIMIT_FSIZE set by a small Python that then execs it (no fork-time callback in
  this multithreaded test process)."""
  setup = ("import os, resource, sys; "
           f"resource.setrlimit(resource.RLIMIT_FSIZE, ({nbytes}, {nbytes})); "
           "os.execv(sys.argv[1], sys.argv[1:])")
  return [sys.executable, "-c", setup, *map(str, cmd)]


def _stage_inputs(tmp_path, stage):
  """(command args for the stage writing into tmp_path/out, a function reading its output)."""
  if stage == "corpus":
    from test_corpus import cc100_text
    (tmp_path / "in.txt").write_text(cc100_text(400, seed=2))
    from brd_jax.corpus import paragraphs
    return (["corpus", "--workdir", tmp_path / "out", "--input", tmp_path / "in.txt",
             "--gin", "corpus.decontaminate=()", "--gin", "corpus.chunk_docs=50"],
            lambda d: list(paragraphs.read_paragraphs(d / "paragraphs")))
  if stage == "generate":
    import tiny_teacher
    from test_generate import GIN, content, write_paragraphs  # pylint: disable=C0415
    pars = write_paragraphs(tmp_path / "paragraphs", 12)
    teacher = tiny_teacher.make(tmp_path / "teacher")
    return (["generate", "--paragraphs", pars, "--ledger", tmp_path / "out", "--teacher", teacher,
             *GIN], content)
  import hf_tiny
  from test_evaluation import _tiny_tokenizer, _write_tiny_data  # pylint: disable=C0415
  hf_tiny.gpt2(tmp_path / "m")
  _tiny_tokenizer(tmp_path / "m")
  _write_tiny_data(tmp_path / "data")
  return (["eval", "--model", tmp_path / "m", "--tasks", "rte,sst2", "--out", tmp_path / "out",
           "--data_dir", tmp_path / "data"],
          lambda d: {t: {k: v for k, v in r.items() if k in ("acc", "acc_norm", "n")} for t, r in
                     json.loads((d / "results.json").read_text())["tasks"].items()})


@pytest.mark.parametrize("stage, limit", [("corpus", 20_000), ("generate", 1_500), ("eval", 900)])
def test_full_disk_is_one_line_leaves_no_torn_file_and_a_rerun_completes(tmp_path, stage, limit,
                                                                         trust):
  from cli_run import ROOT, brd, brd_cmd
  args, output = _stage_inputs(tmp_path, stage)
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "MPLCONFIGDIR": str(tmp_path / "mpl")}
  ref = brd(*[str(a).replace(str(tmp_path / "out"), str(tmp_path / "ref")) for a in args],
            "--no_progress", env=env)
  assert ref.returncode == 0, ref.stderr[-2000:]
  trust.injected()
  r = subprocess.run(_with_file_size_limit(limit, brd_cmd(*args, "--no_progress")), cwd=ROOT,
                     env=env, capture_output=True, text=True, timeout=600)
  lines = [l for l in r.stderr.splitlines() if l.strip()]
  assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
  assert lines[0].startswith(f"brd {stage}: error: {tmp_path / 'out'}") and \
      "File too large" in lines[0], lines[0]
  assert not [p for p in (tmp_path / "out").rglob("*") if p.name.endswith(".tmp")]
  again = brd(*args, "--no_progress", env=env)
  assert again.returncode == 0, again.stderr[-2000:]
  assert output(tmp_path / "out") == output(tmp_path / "ref")
  if stage == "eval":  # the cache lines written before the failure were kept and used
    done = json.loads((tmp_path / "out" / "results.json").read_text())["tasks"]
    assert 0 < sum(t["scored_now"] for t in done.values()) < 22
  trust.survived()


# ---------------------------------------------------------------- brd eval killed

def test_brd_eval_killed_three_times_then_finished_scores_each_request_once(tmp_path, trust):
  import random
  import hf_tiny
  from cli_run import brd, signal_when
  from test_evaluation import _tiny_tokenizer
  hf_tiny.gpt2(tmp_path / "m")
  _tiny_tokenizer(tmp_path / "m")
  (tmp_path / "data" / "sst2").mkdir(parents=True)
  rng = random.Random(4)
  words = "the sky is blue and a film was good bad long short".split()
  (tmp_path / "data" / "sst2" / "dev.tsv").write_text("sentence\tlabel\n" + "".join(
      f"{' '.join(rng.choices(words, k=rng.randrange(3, 12)))} {i}\t{i % 2}\n" for i in range(160)))
  args = ["eval", "--model", tmp_path / "m", "--tasks", "sst2", "--data_dir", tmp_path / "data",
          "--gin", "eval.chunk_chars=300", "--no_progress"]
  ref = brd(*args, "--out", tmp_path / "ref")
  assert ref.returncode == 0, ref.stderr[-2000:]
  work = tmp_path / "killed"

  def cache_lines():
    files = list((work / "cache").glob("*.jsonl")) if (work / "cache").is_dir() else []
    return files[0].read_text().splitlines() if files else []
  kills = 0
  for _ in range(3):
    target = len(cache_lines()) + rng.randrange(4, 40)
    if signal_when([*args, "--out", work], lambda t=target: len(cache_lines()) >= t,
                   signal.SIGKILL):
      kills += 1
      trust.injected()
  assert kills >= 2 and not (work / "results.json").exists()
  before = {json.loads(l)["k"] for l in cache_lines() if l.endswith("}")}
  done = brd(*args, "--out", work)
  assert done.returncode == 0, done.stderr[-2000:]
  res = json.loads((work / "results.json").read_text())["tasks"]["sst2"]
  want = json.loads((tmp_path / "ref" / "results.json").read_text())["tasks"]["sst2"]
  for k in ("acc", "acc_norm", "acc_mean_token", "n"):
    assert res[k] == want[k], k
  # Nothing lost, nothing scored twice: the final run scored exactly what the killed ones had
  # not committed, and every committed line holds a distinct request.
  keys = [json.loads(l)["k"] for l in cache_lines() if l.endswith("}")]
  assert len(keys) == len(set(keys)) == 320 and res["scored_now"] == 320 - len(before)
  assert 0 < len(before) < 320
  trust.survived(kills)


# ---------------------------------------------------------------- SIGTERM in corpus and eval

@pytest.mark.parametrize("stage", ["corpus", "eval"])
def test_sigterm_commits_stops_with_exit_0_and_a_rerun_completes(tmp_path, stage, trust):
  from cli_run import ROOT, brd, brd_cmd
  if stage == "corpus":
    from test_corpus import cc100_text
    (tmp_path / "in.txt").write_text(cc100_text(3000, seed=6))
    args = ["corpus", "--input", tmp_path / "in.txt", "--gin", "corpus.decontaminate=()",
            "--gin", "corpus.chunk_docs=40", "--workdir"]
    progress = lambda w: len(list(w.glob("parts/*/p0000/chunk-*.json")))
    result = lambda w: (w / "paragraphs" / "shard-00000.jsonl").read_text()
  else:
    import hf_tiny
    from test_evaluation import _tiny_tokenizer
    hf_tiny.gpt2(tmp_path / "m")
    _tiny_tokenizer(tmp_path / "m")
    (tmp_path / "data" / "sst2").mkdir(parents=True)
    (tmp_path / "data" / "sst2" / "dev.tsv").write_text("sentence\tlabel\n" + "".join(
        f"the film {i} was {'good' if i % 3 else 'long and bad'}\t{i % 2}\n" for i in range(200)))
    args = ["eval", "--model", tmp_path / "m", "--tasks", "sst2", "--data_dir", tmp_path / "data",
            "--gin", "eval.chunk_chars=200", "--out"]
    progress = lambda w: sum(len(p.read_text().splitlines()) for p in w.glob("cache/*.jsonl"))
    result = lambda w: {k: v for k, v in json.loads((w / "results.json").read_text())[
        "tasks"]["sst2"].items() if k in ("acc", "acc_norm", "acc_mean_token", "n")}
  ref = brd(*args, tmp_path / "ref", "--no_progress")
  assert ref.returncode == 0, ref.stderr[-2000:]
  work = tmp_path / "w"
  proc = subprocess.Popen(brd_cmd(*args, work, "--no_progress"), cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
  deadline = time.time() + 300
  while proc.poll() is None and time.time() < deadline and progress(work) < 2:
    time.sleep(0.01)
  assert proc.poll() is None, "finished before the signal: make the input larger"
  proc.send_signal(signal.SIGTERM)
  trust.injected()
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  assert f"brd {stage}: SIGTERM" in err and "rerun to continue" in err, err[-3000:]
  done_before = progress(work)
  assert done_before >= 2
  assert not (work / "paragraphs").exists() and not (work / "results.json").exists()
  again = brd(*args, work, "--no_progress")
  assert again.returncode == 0, again.stderr[-2000:]
  assert result(work) == result(tmp_path / "ref")
  if stage == "eval":  # what was cached before the signal was not scored again
    assert json.loads((work / "results.json").read_text())["tasks"]["sst2"]["scored_now"] == \
        400 - done_before
  trust.survived()


# ---------------------------------------------------------------- an unwritable output location

@pytest.mark.parametrize("stage", ["corpus", "generate", "train", "eval"])
def test_unwritable_output_location_is_one_line_naming_it(tmp_path, stage, trust):
  """/sys refuses new directories even to root (EPERM): a read-only mount as a user meets it."""
  from test_bad_input import run_cli
  bad = "/sys/brd_unwritable/out"
  if stage == "corpus":
    from test_corpus import cc100_text
    (tmp_path / "in.txt").write_text(cc100_text(20))
    argv = ["corpus", "--input", tmp_path / "in.txt", "--gin", "corpus.decontaminate=()",
            "--workdir", bad]
  elif stage == "generate":
    import tiny_teacher
    from test_generate import GIN, write_paragraphs
    argv = ["generate", "--paragraphs", write_paragraphs(tmp_path / "p", 2), "--teacher",
            tiny_teacher.make(tmp_path / "t"), *GIN, "--ledger", bad]
  elif stage == "train":
    par, led = brd_corpus.make(tmp_path, n_paragraphs=10)
    argv = ["train", "--gin_file", "models/llama_tiny", "--gin", "student.tokenizer='bytes'",
            "--gin", "model.vocab_size=320", "--gin", f"data.paragraphs_dir='{par}'",
            "--gin", f"data.ledger_dir='{led}'", "--no_progress", "--workdir", bad]
  else:
    import hf_tiny
    from test_evaluation import _tiny_tokenizer, _write_tiny_data  # pylint: disable=C0415
    hf_tiny.gpt2(tmp_path / "m")
    _tiny_tokenizer(tmp_path / "m")
    _write_tiny_data(tmp_path / "data")
    argv = ["eval", "--model", tmp_path / "m", "--tasks", "rte", "--data_dir", tmp_path / "data",
            "--no_progress", "--out", bad]
  trust.injected()
  code, err = run_cli(argv)
  lines = [l for l in err.splitlines() if l.strip() and "WARNING" not in l]
  assert code == 2 and len(lines) == 1, (code, err[-3000:])
  assert lines[0].startswith(f"brd {stage}: error: /sys/brd_unwritable") and \
      "not permitted" in lines[0], lines[0]
  trust.survived()
