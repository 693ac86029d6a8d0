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
  from brd_jax.training import loop  # pylint: disable=import-outside-toplevel
  config.parse(TINY, tiny_bindings(*corpus, **{"train.steps": steps, "train.checkpoint_every": 5,
                                               "train.keep_checkpoints": 4, **extra}),
               finalize=False)
  return loop.train(workdir, sharding.make_mesh((1, 1, 1), jax.devices()[:1]), progress=False)


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
  from brd_jax.training import step as step_lib  # pylint: disable=import-outside-toplevel
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
