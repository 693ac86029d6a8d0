"""`brd train` end to end in subprocesses: exact resume after SIGKILL, SIGTERM saves, convert to HF."""
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import brd_corpus
from brd_jax.data import prepare
from brd_jax.training import metrics

pytestmark = pytest.mark.slow


def _bindings(par_dir, led_dir, steps):
  b = {"model.vocab_size": 320, "student.tokenizer": "'bytes'",
       "data.paragraphs_dir": f"'{par_dir}'", "data.ledger_dir": f"'{led_dir}'",
       "data.seq_len": 128, "train.batch_size": 8, "train.log_every": 1,
       "train.warmup_steps": 5, "train.learning_rate": 3e-3, "train.steps": steps,
       "train.checkpoint_every": 5, "train.log_example_ids": True}
  args = ["--gin_file", "models/llama_tiny", "--gin_file", "meshes/cpu8"]
  for k, v in b.items():
    args += ["--gin", f"{k}={v}"]
  return args


def _brd_train(workdir, args, env=None, wait=True):
  cmd = [sys.executable, "-m", "brd_jax.cli", "train", "--workdir", str(workdir), "--no_progress",
         *args]
  env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
  if not wait:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def _finished_checkpoints(workdir) -> list[int]:
  """Steps whose checkpoint directory Orbax has committed (renamed from its temporary name)."""
  d = workdir / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def _kill_when(proc, workdir, step, timeout=300):
  """SIGKILL once this attempt (the one after the events already on record) records STEP or
  later; returns the last step on record."""
  attempt = len(metrics.events(workdir))
  deadline = time.time() + timeout
  while proc.poll() is None and time.time() < deadline:
    recs = [r for r in metrics.records(workdir) if r["attempt"] == attempt and "event" not in r]
    if len(metrics.events(workdir)) > attempt and recs and recs[-1]["step"] >= step:
      break
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  return max((r["step"] for r in metrics.records(workdir) if "event" not in r), default=0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, trust):
  """A 30-step run, and the same run killed with SIGKILL three times at random steps, each time
  resumed; returns what the test saw at each kill: (last step on record, checkpoints on disk)."""
  root = tmp_path_factory.mktemp("train_cli")
  par_dir, led_dir = brd_corpus.make(root, n_paragraphs=60)
  args = _bindings(par_dir, led_dir, 30)
  full = _brd_train(root / "full", args)
  assert full.returncode == 0, full.stderr[-2000:]
  rng, work, kills = random.Random(17), root / "resumed", []
  for _ in range(3):
    start = max(_finished_checkpoints(work), default=0)
    target = min(29, start + rng.randrange(6, 12))
    proc = _brd_train(work, args, wait=False)
    trust.injected()
    last = _kill_when(proc, work, target)
    assert proc.returncode == -signal.SIGKILL
    kills.append((last, _finished_checkpoints(work)))
  resumed = _brd_train(work, args)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  return root, kills, par_dir, led_dir, json.loads(resumed.stdout.strip().splitlines()[-1])


def test_resume_after_sigkill_restores_the_last_checkpoint_and_redoes_only_later_steps(runs,
                                                                                       trust):
  root, kills, _, _, summary = runs
  recs = metrics.records(root / "resumed")
  events = [r for r in recs if "event" in r]
  assert len(events) == 4 and events[0]["event"] == "start"
  for (last, on_disk), ev in zip(kills, events[1:]):
    # Each resume restored the newest checkpoint the killed attempt had committed, no older one.
    if not on_disk:
      assert ev["event"] == "start"
      continue
    assert ev["event"] == "resume"
    assert ev["restored_step"] == max(on_disk) == ev["batches_consumed"]
    assert max(on_disk) <= last < max(on_disk) + 2 * 5  # saves every 5 steps
  assert sum(e["event"] == "resume" for e in events) >= 2
  assert summary["resumed_from"] == events[-1]["restored_step"]
  # Each attempt ran exactly the steps after what it restored, in order, and none before it.
  for a, ev in enumerate(events):
    steps = [r["step"] for r in recs if r["attempt"] == a and "event" not in r]
    first = ev.get("restored_step", 0) + 1
    assert steps == list(range(first, first + len(steps))), (a, steps)
  assert [r["step"] for r in recs if r["attempt"] == 3 and "event" not in r][-1] == 30
  # The final record of every step equals the uninterrupted run: same examples, same loss.
  full, resumed = metrics.read(root / "full"), metrics.read(root / "resumed")
  assert [r["step"] for r in full] == list(range(1, 31)) == [r["step"] for r in resumed]
  for a, b in zip(full, resumed):
    assert a["example_ids"] == b["example_ids"], a["step"]
  # The count of tokens trained on survives each restore (the report's epochs come from it).
  assert [r["tokens_seen"] for r in resumed] == [r["tokens_seen"] for r in full]
  assert summary["tokens_seen"] == full[-1]["tokens_seen"] > 0
  np.testing.assert_allclose([r["loss"] for r in resumed], [r["loss"] for r in full],
                             rtol=1e-6, atol=0)
  # Steps a killed attempt ran past its last checkpoint were redone identically.
  by_step = {r["step"]: r for r in full}
  for r in (r for r in recs if "event" not in r and r["attempt"] < 3):
    assert r["loss"] == pytest.approx(by_step[r["step"]]["loss"], rel=1e-6), r["step"]
  assert (root / "resumed" / "config.gin").exists()
  trust.survived(len(kills))


def test_restore_onto_another_mesh_gives_the_same_params(runs):
  import jax
  from brd_jax import sharding
  from brd_jax.checkpoints import orbax
  from brd_jax.models import build
  root = runs[0]
  a, cfg, tok, step = orbax.load_model(root / "full", sharding.make_mesh((2, 2, 2)))
  b, _, _, _ = orbax.load_model(root / "full", sharding.make_mesh((1, 4, 2)))
  assert step == 30 and cfg.vocab_size == 320 and tok.vocab_size == 258
  pa, pb = build.flat_params(a), build.flat_params(b)
  shard_shape = lambda x: x.addressable_shards[0].data.shape
  assert shard_shape(pb[("layers", "wq")]) != shard_shape(pa[("layers", "wq")])
  for k in pa:
    np.testing.assert_array_equal(np.asarray(jax.device_get(pa[k])), np.asarray(pb[k]))


def test_resume_with_a_changed_data_stream_is_refused(runs):
  root, _, par_dir, led_dir, _ = runs
  args = _bindings(par_dir, led_dir, 40) + ["--gin", "data.seed=5"]
  r = _brd_train(root / "full", args)
  assert r.returncode == 2
  assert len(r.stderr.strip().splitlines()) == 1 and "data.seed" not in r.stderr
  assert "seed 0 -> 5" in r.stderr


def test_train_convert_then_transformers_reload(runs, tmp_path):
  import torch
  import transformers
  from brd_jax.checkpoints import resolve
  root = runs[0]
  r = subprocess.run([sys.executable, "-m", "brd_jax.cli", "convert", "--model", str(root / "full"),
                      "--to", str(tmp_path / "hf")], capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  loaded = resolve.load(str(root / "full"))
  ids = np.array([loaded.tokenizer.encode("The museum in Oslo opened in 1807.")])
  ours = np.asarray(loaded.model(ids)[0])
  hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
  with torch.no_grad():
    theirs = hf(torch.from_numpy(ids)).logits.numpy()
  assert np.abs(ours - theirs).max() < 1e-4
  tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
  assert tok("The museum")["input_ids"] == loaded.tokenizer.encode("The museum")


def test_sigterm_saves_then_exits(tmp_path):
  par_dir, led_dir = brd_corpus.make(tmp_path, n_paragraphs=30)
  proc = _brd_train(tmp_path / "w", _bindings(par_dir, led_dir, 100000) +
                    ["--gin", "train.checkpoint_every=100000"], wait=False)
  deadline = time.time() + 300
  while time.time() < deadline and len(metrics.read(tmp_path / "w")) < 3:
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-2000:]
  summary = json.loads(out.strip().splitlines()[-1])
  assert summary["preempted"] and summary["steps"] >= 3
  assert (tmp_path / "w" / "checkpoints" / str(summary["steps"])).is_dir()


def test_resume_with_changed_ledger_content_is_refused(runs, tmp_path):
  import shutil
  root, _, par_dir, led_dir, _ = runs
  work = tmp_path / "work"
  shutil.copytree(root / "full", work)
  edited = tmp_path / "ledger"
  shutil.copytree(led_dir, edited)
  shard = next(edited.glob("shard-*.jsonl"))
  lines = shard.read_text().splitlines()
  shard.write_text("\n".join(lines[:-2] + [lines[-1], lines[-2]]) + "\n")  # same count, reordered
  r = _brd_train(work, _bindings(par_dir, edited, 40))
  assert r.returncode == 2, r.stderr[-2000:]
  assert len(r.stderr.strip().splitlines()) == 1 and "data" in r.stderr


def test_prepare_only_builds_the_set_the_run_reads_and_loads_no_model(runs, tmp_path):
  root, _, par_dir, led_dir, _ = runs
  out = _brd_train(tmp_path / "w", ["--prepare_only", *_bindings(par_dir, led_dir, 30)])
  assert out.returncode == 0, out.stderr[-2000:]
  got = json.loads(out.stdout.strip().splitlines()[-1])
  ran = list((root / "full" / "prepared").iterdir())
  assert [p.name for p in ran if p.is_dir()] == [os.path.basename(got["prepared"])]
  assert got["counts"]["brd_ner"] == got["counts"]["brd_ori"] == 60
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_prepare_only_on_beam_builds_the_set_the_run_read(runs, tmp_path):
  root, _, par_dir, led_dir, _ = runs
  out = _brd_train(tmp_path / "b", ["--beam", "", *_bindings(par_dir, led_dir, 30)])
  assert out.returncode == 2 and "--prepare_only" in out.stderr
  out = _brd_train(tmp_path / "b", ["--prepare_only", "--beam=--runner=NoSuchRunner",
                                    *_bindings(par_dir, led_dir, 30)])
  assert out.returncode == 2 and "Unexpected pipeline runner: NoSuchRunner" in out.stderr
  assert not (tmp_path / "b" / "prepared").exists()
  out = _brd_train(tmp_path / "b", ["--prepare_only", "--beam", "", *_bindings(par_dir, led_dir,
                                                                              30)])
  assert out.returncode == 0, out.stderr[-2000:]
  got = pathlib.Path(json.loads(out.stdout.strip().splitlines()[-1])["prepared"])
  ran = root / "full" / "prepared" / got.name
  assert got.parent == tmp_path / "b" / "prepared" and ran.is_dir()
  assert prepare.read_manifest(got)["built_by"] == "beam:DirectRunner"
  shards = sorted(p.relative_to(ran) for p in ran.rglob("*.array_record"))
  assert shards and shards == sorted(p.relative_to(got) for p in got.rglob("*.array_record"))
  for f in shards:
    assert (got / f).read_bytes() == (ran / f).read_bytes(), f
