"""One writer per (output directory, process index): `brd generate` and `brd corpus` started twice
with the same index on the same directory, at the same time (real processes)."""
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

import tiny_teacher
from cli_run import ROOT, brd, brd_cmd
from test_corpus import cfg_for, edit_words, outputs, paragraph
from test_generate import write_paragraphs  # n paragraphs, 2n ner units
from brd_jax import writer_lock
from brd_jax.behaviors import generate, ledger
from brd_jax.behaviors.config import GenerateConfig
from brd_jax.corpus import stage
from brd_jax.errors import UserError

GIN = ["--gin", "generate.max_new_tokens=12", "--gin", "generate.batch_size=2",
       "--gin", "generate.commit_every=3", "--gin", "generate.max_attempts=1",
       "--behaviors", "ner", "--no_progress"]
CORPUS = ["--no_progress", "--gin", "corpus.decontaminate=()", "--gin", "corpus.chunk_docs=100"]
@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  return tiny_teacher.make(tmp_path_factory.mktemp("teacher"))


def holder(directory, index: int = 0) -> int | None:
  """The pid written in the lock file of (directory, index), if any."""
  try:
    return json.loads((pathlib.Path(directory) / writer_lock.NAME.format(index)).read_text())["pid"]
  except (OSError, ValueError, KeyError):
    return None


def start(args, tmp_path, name) -> subprocess.Popen:
  with open(tmp_path / f"{name}.log", "w") as out:  # a file, not a pipe nobody reads
    return subprocess.Popen(brd_cmd(*args), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})


def wait_for(proc, ready, what, timeout=120):
  deadline = time.time() + timeout
  while not ready():
    assert proc.poll() is None, f"ended (exit {proc.returncode}) before {what}"
    assert time.time() < deadline, f"no {what} after {timeout} s"
    time.sleep(0.01)


def refused(r, directory, pid, what):
  """Exit 2 with one stderr line naming the directory, index 0 and the holder."""
  lines = [l for l in r.stderr.splitlines() if l.strip()]
  assert r.returncode == 2 and len(lines) == 1, \
      f"the second `brd {what}` was not refused: exit {r.returncode}, {r.stderr[-3000:]!r}"
  assert str(directory) in lines[0] and f"another `brd {what}`" in lines[0], lines[0]
  assert "process 0" in lines[0] and f"pid {pid} " in lines[0], lines[0]


def files(d: pathlib.Path, pattern: str) -> dict:
  return {p: p.read_bytes() for p in d.glob(pattern)}


def refused_while_paused(args, tmp_path, directory, committed, pattern, what) -> None:
  """Starts `brd ARGS`, waits until it holds the lock and `committed()`, pauses it (alive,
  holding the lock, writing nothing), checks that a second identical run is refused and writes
  nothing under `pattern`, then SIGKILLs the first."""
  first = start(args, tmp_path, "first")
  try:
    wait_for(first, lambda: holder(directory) == first.pid and committed(), "committed work")
    first.send_signal(signal.SIGSTOP)
    before = files(directory, pattern)
    refused(brd(*args), directory, first.pid, what)
    assert files(directory, pattern) == before  # the refused run wrote nothing
  finally:
    first.kill()
    first.wait()


# ---------------------------------------------------------------- the lock itself


def test_lock_is_per_directory_and_index_and_a_second_holder_gets_one_line(tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  with writer_lock.hold(a, 0, "generate"):
    with pytest.raises(UserError) as e:
      with writer_lock.hold(a, 0, "generate"):
        pass
    msg = str(e.value)
    assert "\n" not in msg and str(a) in msg and "process 0" in msg and f"pid {os.getpid()}" in msg
    with writer_lock.hold(a, 1, "generate"), writer_lock.hold(b, 0, "generate"):
      pass
  with writer_lock.hold(a, 0, "generate"):  # released at the end of the block
    assert holder(a) == os.getpid()
  assert holder(a) is None  # a released lock names nobody


def test_a_sigkilled_holder_never_blocks_the_next_writer(tmp_path):
  code = ("import sys, time; from brd_jax import writer_lock\n"
          f"with writer_lock.hold({str(tmp_path)!r}, 3, 'corpus'):\n"
          "  print('held', flush=True); time.sleep(600)\n")
  p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
  assert p.stdout.readline() == "held\n"
  with pytest.raises(UserError, match=f"pid {p.pid} "):
    with writer_lock.hold(tmp_path, 3, "corpus"):
      pass
  p.kill()
  p.wait()
  with writer_lock.hold(tmp_path, 3, "corpus"):
    assert holder(tmp_path, 3) == os.getpid()


def test_a_file_system_without_flock_runs_unlocked_and_says_so(tmp_path, monkeypatch, caplog):
  import errno
  import fcntl

  def no_locks(*_):
    raise OSError(errno.ENOLCK, "No locks available")
  monkeypatch.setattr(fcntl, "flock", no_locks)
  with writer_lock.hold(tmp_path, 0, "generate"):
    assert holder(tmp_path) == os.getpid()
  assert "no flock here (No locks available)" in caplog.text


def test_lease_on_an_object_store_is_refused_while_refreshed_and_taken_over_when_not():
  d = f"memory://locks-{os.getpid()}/ledger"
  with writer_lock.hold(d, 0, "generate", ttl=2.0) as first:
    with pytest.raises(UserError, match="another `brd generate` is writing there as process 0"):
      with writer_lock.hold(d, 0, "generate", ttl=2.0):  # sees it refreshed: refused
        pass
    with writer_lock.hold(d, 1, "generate", ttl=2.0):
      pass
    first.stop.set()  # the holder dies: its lease is no longer refreshed
    first.thread.join()
    with writer_lock.hold(d, 0, "generate", ttl=2.0) as second:
      assert second.info["token"].encode() in second.fs.cat_file(second.key)
  assert not first.fs.exists(first.key)  # the old holder's release left the new lease alone
  with writer_lock.hold(d, 0, "generate", ttl=30):  # released: taken at once, nothing to watch
    pass


def test_generate_and_corpus_take_the_lock_before_the_teacher_and_the_input(tmp_path):
  pars = write_paragraphs(tmp_path / "paragraphs", 2)
  cfg = GenerateConfig(teacher=str(tmp_path / "no_such_teacher"), behaviors=("ner",),
                       num_processes=1, process_index=0)
  (tmp_path / "in.txt").write_text("A town had a mill. The mill was old and it was loved.\n")
  with writer_lock.hold(tmp_path / "ledger", 0, "generate"):
    with pytest.raises(UserError, match="another `brd generate`"):  # not: no such teacher
      generate.run(cfg, pars, tmp_path / "ledger", progress=False)
  with writer_lock.hold(tmp_path / "w", 0, "corpus"):
    with pytest.raises(UserError, match="another `brd corpus`"):
      stage.run(cfg_for([tmp_path / "in.txt"]), tmp_path / "w", progress=False)
  assert not (tmp_path / "w" / "parts").exists()


# ---------------------------------------------------------------- two commands, one index


@pytest.mark.slow
def test_second_generate_on_the_same_index_is_refused_and_a_restart_after_sigkill_finishes(
    tmp_path, teacher, trust):
  pars, led = write_paragraphs(tmp_path / "paragraphs", 12), tmp_path / "ledger"  # 24 units
  args = ["generate", "--paragraphs", pars, "--ledger", led, "--teacher", teacher, *GIN]
  refused_while_paused(args, tmp_path, led, lambda: ledger.shards(led), "shard-*", "generate")
  trust.injected()
  third = brd(*args)
  assert third.returncode == 0, third.stderr[-3000:]
  recs = list(ledger.read(led))
  assert len(recs) == len({r["key"] for r in recs}) == len({r["unit"] for r in recs}) == 24
  assert json.loads(third.stdout.strip().splitlines()[-1])["remaining"] == 0
  trust.survived()


@pytest.mark.slow
def test_second_corpus_on_the_same_index_is_refused_and_a_restart_after_sigkill_finishes(
    tmp_path, trust):
  from test_corpus import cc100_text
  (tmp_path / "in.txt").write_text(cc100_text(1500, seed=5))
  work = tmp_path / "w"
  args = ["corpus", "--workdir", work, "--input", tmp_path / "in.txt", *CORPUS]
  refused_while_paused(args, tmp_path, work, lambda: list(work.glob("parts/*/p0000/chunk-*.json")),
                       "parts/*/p0000/*", "corpus")
  assert not (work / "paragraphs").exists()
  trust.injected()
  third = brd(*args)
  assert third.returncode == 0, third.stderr[-3000:]
  stage.run(cfg_for([tmp_path / "in.txt"], chunk_docs=100), tmp_path / "ref", progress=False)
  assert outputs(work) == outputs(tmp_path / "ref") and len(outputs(work)) > 3000
  trust.survived()


# ---------------------------------------------------------------- other indices, at once


@pytest.mark.slow
def test_generate_processes_with_other_indices_share_a_ledger_at_the_same_time(tmp_path, teacher):
  pars, led = write_paragraphs(tmp_path / "paragraphs", 6), tmp_path / "ledger"  # 12 units
  args = ["generate", "--paragraphs", pars, "--ledger", led, "--teacher", teacher, *GIN,
          "--num_processes", 2, "--process_index"]
  p0 = start([*args, 0], tmp_path, "p0")
  try:
    wait_for(p0, lambda: holder(led, 0) == p0.pid, "process 0's lock")
    p0.send_signal(signal.SIGSTOP)  # process 1 runs start to end while process 0 holds its lock
    p1 = brd(*args, 1)
    assert p1.returncode == 0, p1.stderr[-3000:]
  finally:
    p0.send_signal(signal.SIGCONT)
  assert p0.wait(timeout=300) == 0, (tmp_path / "p0.log").read_text()[-3000:]
  recs = list(ledger.read(led))
  assert len(recs) == len({r["key"] for r in recs}) == len({r["unit"] for r in recs}) == 12
  assert {r["process"] for r in recs} == {0, 1}


@pytest.mark.slow
def test_three_corpus_processes_started_together_give_the_one_process_output(tmp_path):
  rng = random.Random(4)
  base = [paragraph(rng) for _ in range(40)]
  docs = ["\n".join(base)]
  for _ in range(600):
    pars = [paragraph(rng) for _ in range(2)]
    if rng.random() < 0.3:
      pars.append(rng.choice(base))  # exact duplicates across processes
    if rng.random() < 0.3:
      pars.append(edit_words(rng.choice(base), rng, 1))  # near duplicates
    docs.append("\n".join(pars))
  (tmp_path / "in.txt").write_text("\n\n".join(docs) + "\n")
  args = ["corpus", "--workdir", tmp_path / "three", "--input", tmp_path / "in.txt", *CORPUS,
          "--gin", "corpus.chunk_docs=50", "--num_processes", 3, "--process_index"]
  procs = [subprocess.Popen(brd_cmd(*args, i), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"}) for i in range(3)]
  ends = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(e[1][-2000:] for e in ends)
  status = sorted(json.loads(out.strip().splitlines()[-1])["status"] for out, _ in ends)
  assert status.count("written") == 1 and set(status) <= {"written", "share done", "up to date"}
  stage.run(cfg_for([tmp_path / "in.txt"], chunk_docs=50), tmp_path / "one", progress=False)
  a, b = outputs(tmp_path / "one"), outputs(tmp_path / "three")
  assert a == b and len(a) > 1000
  ma, mb = stage.read_manifest(tmp_path / "one"), stage.read_manifest(tmp_path / "three")
  assert ma["dropped"] == mb["dropped"] and ma["dropped"]["exact_duplicate"] > 0
  assert ma["dropped"].get("near_duplicate", 0) > 0 and mb["processes"] == 3
  assert not (tmp_path / "three" / "parts").exists()
