"""`brd generate`: exactly-once ledger under kills and process-count changes, streaming engine."""
import collections
import json
import os
import pathlib
import random
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

import tiny_teacher
from cli_run import ROOT, brd_cmd, signal_when
from brd_jax.behaviors import generate, ledger
from brd_jax.behaviors.config import GenerateConfig

CITIES = ["Paris", "Rome", "Lima", "Oslo", "Cairo", "Quito", "Hanoi", "Perth"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
  return tiny_teacher.make(tmp_path_factory.mktemp("teacher"))


def write_paragraphs(d: pathlib.Path, n: int, repeat: str | None = None) -> pathlib.Path:
  rng = random.Random(n)
  d.mkdir(parents=True, exist_ok=True)
  pars = []
  for i in range(n):
    s = [f"The {rng.choice(['museum', 'bridge', 'market'])} in {rng.choice(CITIES)} opened in "
         f"{1800 + i}.", f"It was visited by {rng.randrange(10, 99)} people on day {i}."]
    if repeat and i in (0, n - 1):
      s.append(repeat)
    pars.append({"id": f"p{i:03d}", "doc_id": "d", "text": " ".join(s), "sentences": s})
  (d / "shard-00000.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pars))
  return d


def reading_paragraphs(d: pathlib.Path, n: int, seed: int = 0) -> pathlib.Path:
  """Paragraphs of `tiny_teacher.sentence`s of every kind, for the reading teacher."""
  rng = random.Random(seed)
  d.mkdir(parents=True, exist_ok=True)
  pars = []
  for i in range(n):
    s = [tiny_teacher.sentence(rng, tiny_teacher.KINDS[(i + j) % 4]) for j in range(2)]
    pars.append({"id": f"p{i:03d}", "doc_id": "d", "text": " ".join(s), "sentences": s})
  (d / "shard-00000.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pars))
  return d


def expected_valid(paragraphs_dir, behaviors=("ner", "qra")) -> dict:
  """(behaviour, sentence) -> whether the reading teacher's greedy reading is valid."""
  out = {}
  for line in (pathlib.Path(paragraphs_dir) / "shard-00000.jsonl").read_text().splitlines():
    for s in json.loads(line)["sentences"]:
      for b in behaviors:
        out[(b, s)] = tiny_teacher.valid(b, s)
  return out


def content(ledger_dir) -> dict:
  """key -> what the teacher produced (process and order excluded)."""
  out = {}
  for r in ledger.read(ledger_dir):
    assert r["key"] not in out, f"key {r['key']} twice"
    out[r["key"]] = (r["text"], r["valid"], r["error"], r["n_tokens"], r["finish_reason"])
  return out


def check_exactly_once(ledger_dir, n_units, max_attempts, first_valid=None):
  """Every unit's attempts are 0..n-1, each once; nothing follows a valid reading; a unit stops
  short of max_attempts only when valid. `first_valid`: (behaviour, sentence) -> whether attempt
  0 must be valid (the reading teacher's known outcome)."""
  per_unit = collections.defaultdict(list)
  for path in ledger.shards(ledger_dir):  # every committed shard parses, line by line
    for line in path.read_text().splitlines():
      r = json.loads(line)
      per_unit[r["unit"]].append(r)
  assert len(per_unit) == n_units
  for recs in per_unit.values():
    recs.sort(key=lambda r: r["attempt"])
    assert [r["attempt"] for r in recs] == list(range(len(recs)))  # each once, none skipped
    assert not any(r["valid"] for r in recs[:-1]), "a valid unit was generated again"
    assert recs[-1]["valid"] or len(recs) == max_attempts
    if first_valid is not None:
      assert recs[0]["valid"] == first_valid[(recs[0]["behavior"], recs[0]["sentence"])], recs[0]
  if first_valid is not None:
    assert 0 < sum(first_valid.values()) < len(first_valid)  # both outcomes occur
  return per_unit


GIN = ["--gin", "generate.max_new_tokens=12", "--gin", "generate.commit_every=3",
       "--gin", "generate.batch_size=8", "--behaviors", "ner", "--no_progress"]
# The reading teacher's readings fit in 48 tokens; about 3 in 4 units are valid at attempt 0.
READ = ["--gin", "generate.max_new_tokens=48", "--gin", "generate.commit_every=3",
        "--gin", "generate.batch_size=8", "--behaviors", "ner,qra", "--no_progress"]


@pytest.fixture(scope="module")
def reader(reading_teacher):
  return reading_teacher


@pytest.mark.slow
def test_sigkill_at_five_moments_then_finish_equals_an_uninterrupted_run(tmp_path, reader,
                                                                         trust):
  teacher = reader
  pars = reading_paragraphs(tmp_path / "paragraphs", 24)  # 48 ner + 48 qra units
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  ref = subprocess.run(brd_cmd("generate", "--paragraphs", pars, "--ledger", tmp_path / "ref",
                               "--teacher", teacher, *READ), cwd=ROOT, env=env,
                       capture_output=True, text=True)
  assert ref.returncode == 0, ref.stderr[-3000:]
  out, rng = tmp_path / "killed", random.Random(0)
  kills = 0
  for _ in range(5):
    before = len(ledger.shards(out)) if out.exists() else 0
    target = before + rng.randrange(1, 6)
    # killed anywhere inside the next shard's work
    if signal_when(["generate", "--paragraphs", pars, "--ledger", out, "--teacher", teacher, *READ],
                   lambda t=target: out.exists() and len(ledger.shards(out)) >= t, signal.SIGKILL,
                   timeout=120, delay=rng.random() * 0.5, env=env):
      kills += 1
      trust.injected()
  assert kills >= 3
  done = subprocess.run(brd_cmd("generate", "--paragraphs", pars, "--ledger", out, "--teacher",
                                teacher, *READ), cwd=ROOT, env=env, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  check_exactly_once(out, 96, 2, expected_valid(pars))
  assert content(out) == content(tmp_path / "ref")
  summary = json.loads(done.stdout.strip().splitlines()[-1])
  assert summary["remaining"] == 0
  trust.survived(kills)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_processes_then_one_finish_what_one_process_does(tmp_path, reader):
  teacher = reader
  pars = reading_paragraphs(tmp_path / "paragraphs", 6)  # 24 units
  port = _free_port()
  procs = []
  for i in range(2):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "BRD_COORDINATOR": f"127.0.0.1:{port}",
           "BRD_NUM_PROCESSES": "2", "BRD_PROCESS_ID": str(i)}
    procs.append(subprocess.Popen(
        brd_cmd("generate", "--paragraphs", pars, "--ledger", tmp_path / "multi", "--teacher",
                teacher, "--limit", 5, *READ), cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True))
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
  shards = ledger.shards(tmp_path / "multi")
  assert {s.name[:11] for s in shards} == {"shard-p0000", "shard-p0001"}
  partial = {r["unit"] for r in ledger.read(tmp_path / "multi")}
  assert 0 < len(partial) <= 10
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  fin = subprocess.run(brd_cmd("generate", "--paragraphs", pars, "--ledger", tmp_path / "multi",
                               "--teacher", teacher, "--num_processes", 1, "--process_index", 0,
                               *READ), cwd=ROOT, env=env, capture_output=True, text=True)
  assert fin.returncode == 0, fin.stderr[-3000:]
  one = subprocess.run(brd_cmd("generate", "--paragraphs", pars, "--ledger", tmp_path / "one",
                               "--teacher", teacher, *READ), cwd=ROOT, env=env,
                       capture_output=True, text=True)
  assert one.returncode == 0, one.stderr[-3000:]
  check_exactly_once(tmp_path / "multi", 24, 2, expected_valid(pars))
  assert content(tmp_path / "multi") == content(tmp_path / "one")


def test_repeated_sentence_is_one_unit_and_rerun_does_nothing(tmp_path, teacher):
  shared = "The same sentence appears in two paragraphs."
  pars = write_paragraphs(tmp_path / "paragraphs", 3, repeat=shared)
  cfg = GenerateConfig(teacher=str(teacher), behaviors=("ner", "qra"), max_new_tokens=8,
                       max_attempts=1, num_processes=1, process_index=0, topk=3)
  s = generate.run(cfg, pars, tmp_path / "ledger", progress=False)
  assert s["units"] == 2 * (3 * 2 + 1) and s["this_run"] == s["units"]
  recs = list(ledger.read(tmp_path / "ledger"))
  assert sum(r["sentence"] == shared for r in recs) == 2  # one per behaviour
  again = generate.run(cfg, pars, tmp_path / "ledger", progress=False)
  assert again["this_run"] == 0 and again["remaining"] == 0
  r = recs[0]
  ids, lps = ledger.unpack_topk(r["topk"])
  assert ids.shape == (r["n_tokens"], 3) and np.all(np.diff(lps, axis=1) <= 1e-3)
  assert ledger.unpack_tokens(r["tokens"]) and len(ledger.unpack_tokens(r["tokens"])) == \
      r["n_tokens"]
  m = ledger.read_manifest(tmp_path / "ledger")
  assert m["units"] == 14 and m["done"] == 14 and m["topk_bytes_per_token"] > 0


def test_valid_readings_are_never_generated_again(tmp_path, reader):
  """Re-runs redo only invalid units with attempts left: a valid reading is final."""
  import dataclasses
  pars = reading_paragraphs(tmp_path / "paragraphs", 6)  # 24 units
  want = expected_valid(pars)
  cfg = GenerateConfig(teacher=str(reader), behaviors=("ner", "qra"), max_new_tokens=48,
                       max_attempts=1, num_processes=1, process_index=0, batch_size=8)
  s = generate.run(cfg, pars, tmp_path / "ledger", progress=False)
  assert s["this_run"] == 24 and s["valid_this_run"] == sum(want.values())
  check_exactly_once(tmp_path / "ledger", 24, 1, want)
  assert generate.run(cfg, pars, tmp_path / "ledger", progress=False)["this_run"] == 0
  more = dataclasses.replace(cfg, max_attempts=2)  # one more try for the invalid ones only
  again = generate.run(more, pars, tmp_path / "ledger", progress=False)
  assert again["this_run"] == 24 - sum(want.values()) > 0
  per_unit = check_exactly_once(tmp_path / "ledger", 24, 2, want)
  assert sorted(len(r) for r in per_unit.values()) == sorted(2 - v for v in want.values())
  assert generate.run(more, pars, tmp_path / "ledger", progress=False)["this_run"] == 0


def test_skd_responses_become_brd_skd_examples_in_the_mixture(tmp_path, reader):
  """`--behaviors ner,qra,skd`: one SKD unit per paragraph (the paragraph is the unit), its
  response joined to that paragraph as a `brd_skd` example, and the default mixture draws it."""
  from brd_jax import tokenizer
  from brd_jax.data import tasks
  from brd_jax.data.config import DataConfig
  pars = reading_paragraphs(tmp_path / "paragraphs", 4)
  r = subprocess.run(brd_cmd("generate", "--paragraphs", pars, "--ledger", tmp_path / "ledger",
                             "--teacher", reader, *READ[:-3], "--behaviors", "ner,qra,skd",
                             "--no_progress"), cwd=ROOT, capture_output=True, text=True,
                     env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert r.returncode == 0, r.stderr[-3000:]
  rows = [json.loads(l) for l in (pars / "shard-00000.jsonl").read_text().splitlines()]
  recs = list(ledger.read(tmp_path / "ledger"))
  skd = [x for x in recs if x["behavior"] == "skd"]
  assert sorted(x["sentence"] for x in skd) == sorted(p["text"] for p in rows)
  assert all(x["valid"] and x["text"] == tiny_teacher.READINGS["skd"] for x in skd)
  assert len({x["unit"] for x in recs}) == len(skd) + 2 * sum(len(p["sentences"]) for p in rows)
  dcfg = DataConfig(paragraphs_dir=str(pars), ledger_dir=str(tmp_path / "ledger"), seq_len=64)
  by_task = tasks.examples_by_task(dcfg)
  assert sorted(e["text"] for e in by_task["brd_skd"]) == sorted(
      f"{p['text']}\n{tiny_teacher.READINGS['skd']}" for p in rows)
  reg = tasks.register(tokenizer.byte_level(), dcfg)
  assert reg.counts["brd_skd"] == 4 and reg.rates["brd_skd"] > 0


def test_context_sentences_reach_the_teacher(tmp_path, reader):
  """`generate.context_sentences=1`: each unit carries the sentence before it, the teacher reads
  it (Zora in the context alone gives an entity that is not in the sentence, so invalid), and a
  sentence with context is a unit of its own."""
  pars = reading_paragraphs(tmp_path / "paragraphs", 8)
  base = dict(teacher=str(reader), behaviors=("ner",), max_new_tokens=48, max_attempts=1,
              num_processes=1, process_index=0, batch_size=8)
  generate.run(GenerateConfig(**base, context_sentences=1), pars, tmp_path / "ctx",
               progress=False)
  generate.run(GenerateConfig(**base), pars, tmp_path / "plain", progress=False)
  rows = [json.loads(l) for l in (pars / "shard-00000.jsonl").read_text().splitlines()]
  before = {s: (p["sentences"][i - 1] if i else "") for p in rows
            for i, s in enumerate(p["sentences"])}
  recs = list(ledger.read(tmp_path / "ctx"))
  assert len(recs) == len(before)
  for x in recs:
    assert x["context"] == before[x["sentence"]]
    assert x["text"] == tiny_teacher.reading("ner", x["sentence"], x["context"]), x
    assert x["valid"] == tiny_teacher.valid("ner", x["sentence"], x["context"]), x
  misled = [x for x in recs if x["error"] == "entity_not_in_sentence"]
  assert misled and all("Zora" in x["context"] for x in misled)
  plain = {x["sentence"]: x for x in ledger.read(tmp_path / "plain")}
  assert all(plain[x["sentence"]]["valid"] for x in misled)  # without context: "None", valid
  assert all(x["unit"] != plain[x["sentence"]]["unit"] for x in recs if x["context"])


@pytest.mark.parametrize("args, message", [
    (["--paragraphs", "/nonexistent/p", "--out", "{tmp}/l", "--teacher", "{teacher}"],
     "holds no *.jsonl shards"),
    (["--paragraphs", "{pars}", "--out", "{tmp}/l", "--teacher", "{teacher}", "--behaviors",
      "ner,summary"], "unknown behaviour 'summary'"),
    (["--paragraphs", "{pars}", "--out", "{tmp}/l"], "no teacher"),
    (["--paragraphs", "{pars}", "--out", "{tmp}/l", "--teacher", "{teacher}", "--gin",
      "generate.templates={{'ner': 'ner-chat@9'}}"], "unknown template"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, teacher, args, message):
  pars = write_paragraphs(tmp_path / "paragraphs", 2)
  fill = {"tmp": tmp_path, "teacher": teacher, "pars": pars}
  r = subprocess.run(brd_cmd("generate", *[a.format(**fill) for a in args]), cwd=ROOT,
                     env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True)
  assert r.returncode == 2, r.stderr[-2000:]
  lines = [l for l in r.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and message in lines[0], r.stderr[-2000:]
  assert not list((tmp_path / "l").glob("shard-*")) if (tmp_path / "l").exists() else True


@pytest.mark.real_model
@pytest.mark.slow
def test_brd_train_reads_a_generated_ledger_through_render(tmp_path, smollm2_gguf):
  """The real teacher reads 3 paragraphs (one sentence in two of them); training texts hold
  `render()` of every valid record, a repeated sentence read once and used in both places."""
  from brd_jax.behaviors import parse
  from brd_jax.data import tasks
  from brd_jax.data.config import DataConfig
  shared = "Barack Obama visited Berlin in July 2008."
  rows = [["Angela Merkel was the chancellor of Germany.", shared],
          ["The Danube flows through Vienna and Budapest.", "It ends in the Black Sea."],
          [shared, "He gave a speech near the Victory Column."]]
  pars = tmp_path / "paragraphs"
  pars.mkdir()
  (pars / "shard-00000.jsonl").write_text("".join(
      json.dumps({"id": f"p{i}", "doc_id": "d", "text": " ".join(s), "sentences": s}) + "\n"
      for i, s in enumerate(rows)))
  cfg = GenerateConfig(teacher=str(smollm2_gguf), max_new_tokens=64, max_attempts=3,
                       num_processes=1, process_index=0)
  s = generate.run(cfg, pars, tmp_path / "ledger", progress=False)
  assert s["units"] == 2 * 5 and s["remaining"] == 0
  recs = list(ledger.read(tmp_path / "ledger"))
  assert sorted({(r["behavior"], r["sentence"]) for r in recs if r["sentence"] == shared}) == \
      [("ner", shared), ("qra", shared)]
  assert all(r["paragraph_id"] == "p0" for r in recs if r["sentence"] == shared)
  chosen = ledger.select(recs)
  assert len(chosen) >= 5, [(r["behavior"], r["error"], r["text"]) for r in recs]
  by_task = tasks.examples_by_task(DataConfig(paragraphs_dir=str(pars),
                                              ledger_dir=str(tmp_path / "ledger")))
  uses = 0
  for rec in chosen.values():
    examples = by_task[f"brd_{rec['behavior']}"]
    holders = [e["text"] for e in examples if rec["sentence"] in e["text"]]
    assert holders and all(f"{rec['sentence']}\n{parse.render(rec)}" in t for t in holders)
    uses += len(holders)
  assert uses > len(chosen)  # the shared sentence's readings serve two paragraphs
  r = subprocess.run(brd_cmd("train", "--workdir", tmp_path / "train", "--gin_file",
                             "models/llama_tiny", "--gin",
                             f"student.tokenizer='{smollm2_gguf}'", "--gin",
                             "model.vocab_size=49152", "--gin", "train.steps=2", "--gin",
                             "data.seq_len=64", "--gin", "train.batch_size=8", "--gin",
                             f"data.paragraphs_dir='{pars}'", "--gin",
                             f"data.ledger_dir='{tmp_path / 'ledger'}'", "--no_progress"),
                     cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                     text=True)
  assert r.returncode == 0, r.stderr[-3000:]
  assert json.loads(r.stdout.strip().splitlines()[-1])["steps"] == 2


def test_sigterm_commits_what_is_done_and_exits_cleanly(tmp_path, teacher):
  pars = write_paragraphs(tmp_path / "paragraphs", 24)
  out = tmp_path / "ledger"
  proc = subprocess.Popen(brd_cmd("generate", "--paragraphs", pars, "--ledger", out, "--teacher",
                                  teacher, *GIN), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
  deadline = time.time() + 120
  while time.time() < deadline and not (out.exists() and ledger.shards(out)):
    time.sleep(0.02)
  proc.send_signal(signal.SIGTERM)
  stdout, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 0, stderr[-3000:]
  summary = json.loads(stdout.strip().splitlines()[-1])
  assert summary["stopped"] is True and summary["remaining"] > 0
  assert summary["this_run"] < 48  # stopped within the batch in hand, not after all 48 units
  assert len(content(out)) == summary["this_run"]  # every generated row was committed


def test_engine_switches_change_neither_keys_nor_greedy_readings(tmp_path, teacher):
  """All three throughput switches on (speculation forced on this CPU) vs all off."""
  pars = write_paragraphs(tmp_path / "paragraphs", 5)
  base = dict(teacher=str(teacher), behaviors=("ner", "qra"), max_new_tokens=12,
              max_attempts=1, num_processes=1, process_index=0, batch_size=4)
  on = GenerateConfig(**base, speculate=4)
  off = GenerateConfig(**base, continuous_batching=False, prefix_cache=False, speculate=0)
  a = generate.run(on, pars, tmp_path / "on", progress=False)
  b = generate.run(off, pars, tmp_path / "off", progress=False)
  assert a["this_run"] == b["this_run"] == 2 * 5 * 2
  assert content(tmp_path / "on") == content(tmp_path / "off")
