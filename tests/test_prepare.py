"""Prepared training examples (`data/prepare.py`): equal to a plain-Python join of paragraphs and
ledger (text, token ids, the teacher's top-k), the same bytes after a SIGKILL and a re-run, and,
read by two JAX processes, each process's own shards, every example once."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import brd_corpus
import two_processes
from brd_jax import tokenizer
from brd_jax.behaviors import ledger, parse
from brd_jax.benchmarks import data as bench_data
from brd_jax.data import prepare
from brd_jax.data.config import DataConfig

SEQ = 128


def _prepared(d, task):
  info = prepare.read_manifest(d)["tasks"][task]
  return [ex for f in info["shards"] for ex in prepare.read_shard(d / task / f)]


def _valid_records(led_dir):
  """sentence_key -> the valid record of lowest attempt (first seen on ties), read plainly."""
  out = {}
  for f in sorted(led_dir.glob("shard-*.jsonl")):
    for line in f.read_text().splitlines():
      r = json.loads(line)
      if r["valid"] is True and (r["sentence_key"] not in out
                                 or r["attempt"] < out[r["sentence_key"]]["attempt"]):
        out[r["sentence_key"]] = r
  return out


@pytest.fixture(scope="module")
def text_corpus(tmp_path_factory):
  """40 paragraphs; p1 (as its third) and p8 (as its first, in another shard of 7) repeat p0's
  first sentence, p2's second sentence has no NER reading, and p3's first sentence has a second
  valid QRA attempt, written later (attempt 0 must win)."""
  root = tmp_path_factory.mktemp("prep")
  pars, led = brd_corpus.make(root, n_paragraphs=40)
  rows = [json.loads(l) for l in (pars / "shard-00000.jsonl").read_text().splitlines()]
  for i, j in ((1, 2), (8, 0)):
    rows[i]["sentences"][j] = rows[0]["sentences"][0]
    rows[i]["text"] = " ".join(rows[i]["sentences"])
  (pars / "shard-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  shard = led / "shard-p0000-000000.jsonl"
  recs = [json.loads(l) for l in shard.read_text().splitlines()]
  gone = ledger.sentence_key("ner", rows[2]["sentences"][1])
  recs = [r for r in recs if r["sentence_key"] != gone]
  later = brd_corpus.record("qra", rows[3]["sentences"][0], [{"question": "Why?",
                                                              "answer": "Later."}], attempt=1)
  shard.write_text("".join(json.dumps(r) + "\n" for r in recs))
  (led / "shard-p0001-000000.jsonl").write_text(json.dumps(later) + "\n")
  return pars, led, rows


def test_prepared_text_examples_equal_a_plain_join(text_corpus, tmp_path):
  pars, led, rows = text_corpus
  tok = tokenizer.byte_level()
  cfg = DataConfig(paragraphs_dir=str(pars), ledger_dir=str(led), seq_len=SEQ,
                   shard_paragraphs=7)
  d = prepare.prepare(cfg, tok, False, tmp_path, progress=False, partitions=3)
  recs = _valid_records(led)
  want = {"brd_ori": [r["text"] for r in rows], "brd_skd": []}
  for b in ("ner", "qra"):
    want[f"brd_{b}"] = []
    for p in rows:
      parts, read = [], False
      for s in p["sentences"]:
        parts.append(s)
        r = recs.get(ledger.sentence_key(b, s))
        if r:
          parts.append(parse.render(r))
          read = True
      if read:
        want[f"brd_{b}"].append("\n".join(parts))
  assert "Later." not in "".join(want["brd_qra"]) and len(want["brd_ner"]) == 40
  m, cut = prepare.read_manifest(d), False
  assert len(m["tasks"]["brd_ner"]["shards"]) == 6  # 40 paragraphs, 7 a shard
  for task, texts in want.items():
    ids = [tok.encode(t, add_bos=False) for t in texts]
    got = [ex["targets"].tolist() for ex in _prepared(d, task)]
    assert got == [x[:SEQ - 1] + [tok.eos_id] for x in ids], task
    kept = sum(min(len(x) + 1, SEQ) for x in ids)
    assert m["tasks"][task]["tokens"] == [kept, sum(len(x) + 1 for x in ids) - kept]
    cut |= any(len(x) >= SEQ for x in ids)
  assert cut  # the cut is exercised


def test_prepared_kd_examples_carry_the_teachers_tokens_and_topk(tmp_path):
  tok = tokenizer.byte_level()
  pars, led = bench_data.make(tmp_path / "in", readings=200, kd=True,
                              tokenizer_fp=tok.fingerprint())
  cfg = DataConfig(paragraphs_dir=str(pars), ledger_dir=str(led), seq_len=SEQ * 4,
                   shard_paragraphs=6)
  d = prepare.prepare(cfg, tok, True, tmp_path / "prep", progress=False, partitions=2)
  recs = _valid_records(led)
  sep = tok.encode("\n", add_bos=False)
  got = _prepared(d, "brd_ner")
  rows = [json.loads(l) for f in sorted(pars.glob("*.jsonl")) for l in f.read_text().splitlines()]
  assert len(got) == len(rows) == 20
  for p, ex in zip(rows, got):
    ids, pos, top_ids, top_lps = [], [], [], []
    for i, s in enumerate(p["sentences"]):
      ids += (sep if i else []) + tok.encode(s, add_bos=False)
      r = recs[ledger.sentence_key("ner", s)]
      teacher = ledger.unpack_tokens(r["tokens"])
      ti, tl = ledger.unpack_topk(r["topk"])
      ids += sep
      pos += range(len(ids), len(ids) + len(teacher))
      ids += teacher
      top_ids.append(ti)
      top_lps.append(tl)
    n = SEQ * 4 - 1
    keep = [j for j, q in enumerate(pos) if q < n]
    assert ex["targets"].tolist() == ids[:n] + [tok.eos_id]
    assert ex["positions"].tolist() == [pos[j] for j in keep]
    np.testing.assert_array_equal(ex["ids"], np.concatenate(top_ids)[keep])
    np.testing.assert_array_equal(ex["logprobs"],
                                  np.concatenate(top_lps)[keep].astype(np.float16))
  assert sum(len(e["positions"]) for e in got) > 1000


def test_sigkill_during_preparation_then_a_rerun_gives_the_same_shards(tmp_path, trust):
  tok = tokenizer.byte_level()
  pars, led = bench_data.make(tmp_path / "in", readings=20_000, kd=False)
  kw = dict(paragraphs_dir=str(pars), ledger_dir=str(led), seq_len=SEQ, shard_paragraphs=100)
  code = ("import sys; from brd_jax import tokenizer; from brd_jax.data import prepare; "
          "from brd_jax.data.config import DataConfig; "
          f"prepare.prepare(DataConfig(**{kw!r}), tokenizer.byte_level(), False, sys.argv[1], "
          "progress=False, partitions=4)")
  killed = tmp_path / "killed"
  proc = subprocess.Popen([sys.executable, "-c", code, str(killed)],
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
  deadline = time.time() + 120
  while not list(killed.glob(".*.partial/brd_qra/shard-00003.array_record")):
    assert proc.poll() is None and time.time() < deadline, "preparation ended before the kill"
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  trust.injected()
  assert not [p for p in killed.iterdir() if p.is_dir() and not p.name.startswith(".")]
  cfg = DataConfig(**kw)
  again = prepare.prepare(cfg, tok, False, killed, progress=False, partitions=4)
  clean = prepare.prepare(cfg, tok, False, tmp_path / "clean", progress=False, partitions=4)
  files = sorted(p.relative_to(clean) for p in clean.rglob("*.array_record"))
  assert len(files) == 4 * 20  # 2000 paragraphs, 100 a shard, 4 tasks (SKD empty)
  assert files == sorted(p.relative_to(again) for p in again.rglob("*.array_record"))
  _same_tree(again, clean)
  assert not list(killed.glob(".*.partial"))
  trust.survived()


def _same_tree(a, b):
  """Every file of two prepared directories the same bytes; manifests equal but for timing."""
  files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
  assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
  for f in files:
    if f != prepare.MANIFEST:
      assert (a / f).read_bytes() == (b / f).read_bytes(), f
  strip = lambda m: {k: v for k, v in m.items() if k not in ("seconds", "built_by")}  # noqa: E731
  assert strip(prepare.read_manifest(a)) == strip(prepare.read_manifest(b))
  return files


def test_a_beam_build_writes_the_local_builds_shards_byte_for_byte(text_corpus, tmp_path):
  """Two Beam worker processes (DirectRunner, multi_processing): the fixture's paragraphs in 3
  shards of 12, 1 and 27, its repeated sentences, missing reading and later attempt, a tie (another valid record of one key
  and attempt, in a later ledger shard: the first in ledger order wins), and KD's top-k."""
  from brd_jax.data import prepare_beam
  _, led, rows = text_corpus
  pars, led2 = tmp_path / "paragraphs", tmp_path / "ledger"
  pars.mkdir()
  led2.mkdir()
  for i, (a, b) in enumerate(((0, 12), (12, 13), (13, 40))):  # shards across chunk bounds
    (pars / f"shard-{i:05d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[a:b]))
  for f in led.iterdir():
    (led2 / f.name).write_bytes(f.read_bytes())
  tie = brd_corpus.record("ner", rows[5]["sentences"][1], [{"entity": "Tie", "type": "location",
                                                            "description": "second"}])
  (led2 / "shard-p0002-000000.jsonl").write_text(json.dumps(tie) + "\n")
  tok = tokenizer.byte_level()
  beam = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
  cfg = DataConfig(paragraphs_dir=str(pars), ledger_dir=str(led2), seq_len=SEQ,
                   shard_paragraphs=7)
  local = prepare.prepare(cfg, tok, False, tmp_path / "local", progress=False, partitions=3)
  built = prepare_beam.build(cfg, "bytes", False, tmp_path / "beam", beam)
  assert built.name == local.name and not list((tmp_path / "beam").glob(".*.partial"))
  assert len(_same_tree(local, built)) == 1 + 4 * 6
  assert prepare.read_manifest(built)["built_by"] == "beam:DirectRunner"
  texts = [tok.decode(e["targets"].tolist()) for e in _prepared(built, "brd_ner")]
  assert "second" not in "".join(texts) and "Later." not in "".join(
      tok.decode(e["targets"].tolist()) for e in _prepared(built, "brd_qra"))

  kpars, kled = bench_data.make(tmp_path / "kd", readings=200, kd=True,
                                tokenizer_fp=tok.fingerprint())
  kcfg = DataConfig(paragraphs_dir=str(kpars), ledger_dir=str(kled), seq_len=SEQ * 4,
                    shard_paragraphs=6)
  local = prepare.prepare(kcfg, tok, True, tmp_path / "local", progress=False, partitions=2)
  built = prepare_beam.build(kcfg, "bytes", True, tmp_path / "beam", beam)
  assert built.name == local.name and len(_same_tree(local, built)) > 4
  assert sum(len(e["positions"]) for e in _prepared(built, "brd_ner")) > 1000


@pytest.mark.multiprocess
def test_two_processes_open_only_their_shards_and_see_every_example_once(tmp_path):
  pars, led = brd_corpus.make(tmp_path, n_paragraphs=40)
  two_processes.run("multihost_data_worker.py", lambda i: (
      pars, led, tmp_path / "prep", tmp_path / f"out{i}.json"))
  got = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
  # 40 paragraphs, 7 a shard: 6 shards, 3 a process, no file opened by both
  assert [len(g["opened"]) for g in got] == [3, 3]
  assert not set(got[0]["opened"]) & set(got[1]["opened"])
  tok = tokenizer.byte_level()
  want = sorted(tok.encode(r["text"], add_bos=False) + [tok.eos_id]
                for r in map(json.loads, (pars / "shard-00000.jsonl").read_text().splitlines()))
  seen = [tuple(x) for g in got for x in g["examples"]]
  assert len(seen) == len(set(seen)) == 40
  assert sorted(map(list, seen)) == want
  # every process's input position reaches the checkpoint, in process order
  assert got[0]["states"] == got[1]["states"] == [got[0]["own"], got[1]["own"]]
