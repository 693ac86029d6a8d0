"""The corpus stage: readers, filters, splitter, deduplication, decontamination, processes, resume."""
import collections
import dataclasses
import gzip
import json
import lzma
import os
import pathlib
import random
import signal

import pytest

import needs
from cli_run import brd, signal_when
from brd_jax.corpus import readers, split, stage
from brd_jax.corpus.config import CorpusConfig
from brd_jax.errors import UserError

SUBJECTS = ["The harbour", "Our village", "The old mill", "A small library", "The northern road",
            "The museum", "Their orchard", "The river ferry", "The night market", "A quiet chapel"]
VERBS = ["was rebuilt", "was opened", "was closed", "was painted", "was sold", "was flooded",
         "was extended", "was visited", "was restored", "was photographed"]


def sentence(rng: random.Random) -> str:
  """A varied English sentence (its own words, so paragraphs made of them are distinct)."""
  n = rng.randrange(1000, 9999)
  extra = " ".join(rng.choice(["quickly", "again", "twice", "at dawn", "in spring", "by hand",
                               "with care", "for years", "near the square", "after the storm"])
                   for _ in range(rng.randrange(1, 4)))
  return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {extra} in {n} by worker {rng.randrange(10**6)}."


def paragraph(rng: random.Random, k: int = 3) -> str:
  return " ".join(sentence(rng) for _ in range(k))


def cc100_text(n_docs: int, seed: int = 0, pars: int = 3) -> str:
  rng = random.Random(seed)
  return "".join("\n".join(paragraph(rng) for _ in range(pars)) + "\n\n" for _ in range(n_docs))


def outputs(workdir) -> list[dict]:
  d = pathlib.Path(workdir) / "paragraphs"
  return [json.loads(l) for p in sorted(d.glob("*.jsonl")) for l in p.read_text().splitlines()]


def cfg_for(inputs, **kw) -> CorpusConfig:
  kw.setdefault("decontaminate", ())
  return CorpusConfig(inputs=tuple(map(str, inputs)), num_processes=1, process_index=0, **kw)


def docs_of(path, **kw):
  cfg = cfg_for([path], **kw)
  counts = collections.Counter()
  out = [paras for src in readers.expand(cfg.inputs, cfg.format)
         for _, paras in readers.documents(src, cfg, counts)]
  return out, counts


# ---------------------------------------------------------------- readers


def test_cc100_plain_xz_gz_directory_and_glob_read_the_same_documents(tmp_path):
  text = cc100_text(5)
  (tmp_path / "a.txt").write_text(text)
  with lzma.open(tmp_path / "a.txt.xz", "wt") as f:
    f.write(text)
  with gzip.open(tmp_path / "a.txt.gz", "wt") as f:
    f.write(text)
  want, _ = docs_of(tmp_path / "a.txt")
  assert len(want) == 5 and all(len(d) == 3 for d in want)
  assert docs_of(tmp_path / "a.txt.xz")[0] == want
  assert docs_of(tmp_path / "a.txt.gz")[0] == want
  sub = tmp_path / "dir"
  sub.mkdir()
  for k in range(3):
    (sub / f"part{k}.txt").write_text(cc100_text(2, seed=k))
  (sub / ".hidden.txt").write_text("not read\n")
  from_dir, _ = docs_of(sub)
  from_glob, _ = docs_of(f"{sub}/part*.txt")
  assert len(from_dir) == 6 and from_dir == from_glob


def test_jsonl_parquet_hf_and_tfds_readers(tmp_path):
  import datasets
  import pyarrow as pa
  import pyarrow.parquet as pq
  rows = [{"id": f"d{k}", "body": f"First paragraph {k}. It has two sentences.\nSecond one {k}."}
          for k in range(4)]
  (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) +
                                    "{not json\n" + json.dumps({"other": 1}) + "\n")
  got, counts = docs_of(tmp_path / "a.jsonl", text_field="body")
  want = [[f"First paragraph {k}. It has two sentences.", f"Second one {k}."] for k in range(4)]
  assert got == want
  assert counts["invalid_json_line"] == 1 and counts["missing_text_field"] == 1
  pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
  assert docs_of(tmp_path / "a.parquet", text_field="body")[0] == want
  with pytest.raises(UserError, match="no column 'text'"):
    docs_of(tmp_path / "a.parquet")
  datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hfds"))
  assert docs_of(tmp_path / "hfds", text_field="body")[0] == want
  assert docs_of(f"hf:{tmp_path / 'hfds'}", text_field="body")[0] == want
  import tensorflow as tf
  import tensorflow_datasets as tfds
  builder = tfds.dataset_builders.TfDataBuilder(
      name="brd_corpus_test", version="1.0.0", data_dir=str(tmp_path / "tfds"),
      split_datasets={"train": tf.data.Dataset.from_tensor_slices(
          {"body": [r["body"] for r in rows]})},
      features=tfds.features.FeaturesDict({"body": tfds.features.Text()}))
  builder.download_and_prepare()
  got, _ = docs_of("tfds:brd_corpus_test:train", text_field="body",
                   tfds_data_dir=str(tmp_path / "tfds"))
  assert sorted(got) == sorted(want)  # TFDS may order records its own way


def test_wrapped_prose_paragraphs_end_at_short_sentence_final_lines(tmp_path):
  long_line = "word " * 14 + "and more"
  text = "\n".join([long_line, long_line, "it ended here.", long_line, "short but no stop",
                    long_line + ".", "The end."]) + "\n"
  (tmp_path / "book.txt").write_text(text)
  got, _ = docs_of(tmp_path / "book.txt", format="wrapped")
  assert [len(p.split()) for p in got[0]] == [3 + 2 * 16 - 0, 16 + 4 + 16 + 2]
  assert got[0][0].endswith("it ended here.") and got[0][1].endswith("The end.")


def test_invalid_utf8_control_characters_and_long_lines_are_counted_not_fatal(tmp_path):
  good = "A good paragraph is here. It has two sentences."
  data = (good.encode() + b"\n" + b"Caf\xe9 is open today. It serves tea daily and it stays "
          b"open late in summer.\n" + b"\xff\xfe\xfa\xfb\xfc\n" + b"A bell\x07 rang twice. Then "
          b"it stopped ringing.\n" + b"x" * 5000 + b"\n" + good.encode() + b"\n")
  (tmp_path / "bad.txt").write_bytes(data)
  cfg = cfg_for([tmp_path / "bad.txt"], max_line_bytes=1000, max_replaced_fraction=0.05)
  summary = stage.run(cfg, tmp_path / "w", progress=False)
  assert summary["status"] == "written"
  m = stage.read_manifest(tmp_path / "w")
  assert m["repaired"] == {"invalid_utf8_replaced": 1, "control_chars_removed": 1}
  texts = [r["text"] for r in outputs(tmp_path / "w")]
  assert "A bell rang twice. Then it stopped ringing." in texts
  assert any(t.startswith("Caf\ufffd is open") for t in texts)
  assert texts.count(good) == 1  # the repeat is an exact duplicate
  assert m["dropped"]["exact_duplicate"] == 1
  assert m["dropped"]["invalid_utf8_line"] == 1 and m["dropped"]["line_too_long"] == 1


# ---------------------------------------------------------------- splitter


def test_chosen_splitter_gets_97_percent_of_the_hard_cases():
  from brd_jax.corpus.split_cases import CASES, HELD_OUT
  chosen = split.make(CorpusConfig().splitter)
  acc, wrong = split.accuracy(chosen, CASES)
  assert len(CASES) >= 60 and acc >= 0.97, wrong
  assert split.accuracy(chosen, HELD_OUT)[0] >= 0.85
  assert split.accuracy(split.make(CorpusConfig().splitter, repair_errors=False), CASES)[0] < acc
  with pytest.raises(UserError, match="corpus.splitter"):
    split.make("nltk")


def test_bench_split_reports_every_splitter(tmp_path):
  from brd_jax.benchmarks import split as split_bench
  (tmp_path / "t.txt").write_text(cc100_text(20))
  res = split_bench.run(str(tmp_path / "t.txt"), json_path=str(tmp_path / "s.json"),
                        min_seconds=0.1)
  names = {r["splitter"] for r in res["splitters"]}
  assert {"pysbd", "blingfire+repair", "syntok"} <= names
  assert json.loads((tmp_path / "s.json").read_text())["ratio"] == pytest.approx(res["ratio"])
  assert all(r["mb_per_s"] > 0 for r in res["splitters"])


# ---------------------------------------------------------------- dedup


@pytest.fixture(scope="module")
def real_paragraphs():
  """Distinct real English paragraphs (Botchan, from the registry); fails when unreachable unless
  BRD_OFFLINE=1."""
  path = needs.asset("english-botchan")
  cfg = CorpusConfig(inputs=("asset:english-botchan",), format="wrapped")
  assert [s.path for s in readers.expand(cfg.inputs, cfg.format)] == [str(path)]
  paras = []
  for src in readers.expand(cfg.inputs, cfg.format):
    for _, doc in readers.documents(src, cfg, collections.Counter()):
      paras.extend(p for p in doc if len(p.split()) >= 25 and p.rstrip()[-1:] in ".!?\"'")
  return list(dict.fromkeys(paras))


def edit_words(text: str, rng: random.Random, k: int) -> str:
  """k word edits: substitute, delete or insert."""
  ws = text.split()
  for _ in range(k):
    i = rng.randrange(1, len(ws) - 1)
    op = rng.choice("sdi")
    if op == "s":
      ws[i] = rng.choice(["red", "seven", "quietly", "house", "never"])
    elif op == "d":
      del ws[i]
    else:
      ws.insert(i, rng.choice(["very", "old", "then", "also", "still"]))
  return " ".join(ws)


def test_near_duplicates_are_removed_and_distinct_paragraphs_kept(tmp_path, real_paragraphs):
  rng = random.Random(0)
  distinct = real_paragraphs
  assert len(distinct) >= 200
  near = [edit_words(p, rng, rng.randrange(1, 4)) for p in rng.sample(distinct, 100)]
  exact = rng.sample(distinct, 20)
  docs = [[p] for p in distinct] + [[p] for p in near] + [[p] for p in exact]
  (tmp_path / "in.txt").write_text("".join(p[0] + "\n\n" for p in docs))
  cfg = cfg_for([tmp_path / "in.txt"], min_sentences=1, boilerplate=(), min_alpha_ratio=0.0,
                require_terminal_punct=False, max_sentence_chars=10**6)  # dedup alone decides
  stage.run(cfg, tmp_path / "w", progress=False)
  kept = {r["text"] for r in outputs(tmp_path / "w")}
  kept_distinct = sum(" ".join(p.split()) in kept for p in distinct)
  removed_near = sum(p not in kept for p in near)
  m = stage.read_manifest(tmp_path / "w")
  print(f"distinct kept {kept_distinct}/{len(distinct)}, near removed {removed_near}/100")
  assert kept_distinct >= 0.99 * len(distinct), (kept_distinct, len(distinct))
  assert removed_near >= 95, removed_near
  assert m["dropped"]["exact_duplicate"] >= 20


# ---------------------------------------------------------------- decontamination


eval_dir = needs.eval_data


def test_a_13_word_overlap_with_an_rte_input_is_dropped_and_a_12_word_one_kept(tmp_path):
  """n is exactly 13 (corpus.decontam_ngram). Each overlap is fenced by a word no RTE input has,
  so no 14-gram of the first paragraph and no 13-gram of the second can match, while a 12-gram
  check would drop the second. The overlap crosses a sentence end of the input and is written
  lower-case without its punctuation: words are compared as `ngrams.words` normalises them. The
  12 words are followed by a full stop and the fence: the n-grams run across sentence ends."""
  import re
  from brd_jax.corpus import ngrams
  from brd_jax.evaluation.tasks import input_texts
  eval_dir()
  texts = input_texts(("rte",), None)
  fence = "qzxv"
  assert not any(fence in ngrams.words(t) for t in texts["rte"])
  run = None
  for t in texts["rte"]:  # the first input with 7 words before a sentence end and 6 after it
    end, ws = re.search(r"\w\. (?=[A-Z])", t), ngrams.words(t)
    start = len(ngrams.words(t[:end.end()])) - 7 if end else -1
    if start >= 0 and start + 13 <= len(ws):
      run = ws[start:start + 13]
      break
  contaminated = f"Someone once read a report. It said {fence} {' '.join(run)} {fence}."
  near_miss = f"Someone wrote it down. It said {fence} {' '.join(run[:12])}. Qzxv stopped."
  (tmp_path / "in.txt").write_text(f"{contaminated}\n\n{near_miss}\n")
  cfg = cfg_for([tmp_path / "in.txt"], decontaminate=("rte",), require_terminal_punct=False,
                near_dedup=False)
  stage.run(cfg, tmp_path / "w", texts, progress=False)
  kept = [r["text"] for r in outputs(tmp_path / "w")]
  assert kept == [near_miss]
  m = stage.read_manifest(tmp_path / "w")
  assert m["dropped"]["contaminated"] == 1
  assert m["decontamination"]["rte"]["paragraphs_dropped"] == 1
  assert m["decontamination"]["rte"]["examples"] == 277


# ---------------------------------------------------------------- processes, re-runs, resume


@pytest.mark.parametrize("n_files", [1, 5])
def test_three_processes_give_the_one_process_output(tmp_path, n_files):
  rng = random.Random(1)
  base = [paragraph(rng) for _ in range(40)]
  src = tmp_path / "in"
  src.mkdir()
  for f in range(n_files):
    docs = ["\n".join(base[f::n_files])]
    for d in range(30 // n_files):
      pars = [paragraph(rng) for _ in range(2)]
      if rng.random() < 0.3:
        pars.append(rng.choice(base))  # exact duplicates across files and processes
      if rng.random() < 0.3:
        pars.append(edit_words(rng.choice(base), rng, 1))  # near duplicates
      docs.append("\n".join(pars))
    (src / f"in{f}.txt").write_text("\n\n".join(docs) + "\n")
  one = cfg_for([src], chunk_docs=4)
  stage.run(one, tmp_path / "one", progress=False)
  for i in range(3):
    cfg = dataclasses.replace(one, num_processes=3, process_index=i)
    s = stage.run(cfg, tmp_path / "three", progress=False)
    assert s["status"] == ("written" if i == 2 else "share done")
  a, b = outputs(tmp_path / "one"), outputs(tmp_path / "three")
  assert a == b and len(a) > 50
  ma, mb = stage.read_manifest(tmp_path / "one"), stage.read_manifest(tmp_path / "three")
  assert ma["dropped"] == mb["dropped"] and ma["dropped"]["exact_duplicate"] > 0
  assert ma["dropped"].get("near_duplicate", 0) > 0
  assert not (tmp_path / "three" / "parts").exists()


def test_rerun_is_a_no_op_and_a_changed_input_rebuilds(tmp_path):
  (tmp_path / "a.txt").write_text(cc100_text(10))
  cfg = cfg_for([tmp_path / "a.txt"])
  assert stage.run(cfg, tmp_path / "w", progress=False)["status"] == "written"
  shard = tmp_path / "w" / "paragraphs" / "shard-00000.jsonl"
  before = (shard.stat().st_mtime_ns, shard.read_bytes())
  assert stage.run(cfg, tmp_path / "w", progress=False)["status"] == "up to date"
  assert (shard.stat().st_mtime_ns, shard.read_bytes()) == before
  assert not (tmp_path / "w" / "parts").exists()  # nothing was read or processed again
  (tmp_path / "a.txt").write_text(cc100_text(12))
  s = stage.run(cfg, tmp_path / "w", progress=False)
  assert s["status"] == "written" and s["paragraphs"] == 36
  s = stage.run(dataclasses.replace(cfg, min_sentences=3), tmp_path / "w", progress=False)
  assert s["status"] == "written" and s["paragraphs"] == 36  # changed setting: rebuilt
  s = stage.run(dataclasses.replace(cfg, max_paragraphs=7), tmp_path / "w", progress=False)
  assert s["paragraphs"] == 7 and [r["text"] for r in outputs(tmp_path / "w")] == \
      [" ".join(p.split()) for d in cc100_text(12).split("\n\n") for p in d.splitlines()][:7]


def test_sigkill_then_rerun_equals_an_uninterrupted_run(tmp_path, trust):
  (tmp_path / "in.txt").write_text(cc100_text(3000, seed=5))
  common = ["--input", tmp_path / "in.txt", "--no_progress", "--gin", "corpus.decontaminate=()",
            "--gin", "corpus.chunk_docs=100", "--gin", "corpus.keep_parts=True"]
  ref = brd("corpus", "--workdir", tmp_path / "ref", *common)
  assert ref.returncode == 0, ref.stderr
  rng = random.Random(3)
  work, kills = tmp_path / "killed", 0
  for _ in range(2):
    target = rng.randrange(2, 20)
    if signal_when(["corpus", "--workdir", work, *common],
                   lambda t=target: len(list(work.glob("parts/*/p0000/chunk-*.json"))) >= t,
                   signal.SIGKILL, timeout=60):
      kills += 1
      trust.injected()
  assert kills == 2 and not (work / "paragraphs").exists()
  committed = {p: p.stat().st_mtime_ns for p in work.glob("parts/*/p0000/chunk-*.json")}
  assert len(committed) >= 2
  again = brd("corpus", "--workdir", work, *common)
  assert again.returncode == 0, again.stderr
  assert {p: p.stat().st_mtime_ns for p in committed} == committed  # committed chunks not redone
  assert outputs(work) == outputs(tmp_path / "ref")
  ref_m, m = stage.read_manifest(tmp_path / "ref"), stage.read_manifest(work)
  assert (m["kept"], m["dropped"], m["documents"]) == (ref_m["kept"], ref_m["dropped"],
                                                       ref_m["documents"])
  trust.survived(kills)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("case", ["missing", "empty", "binary", "huge_line", "no_paragraphs",
                                  "bad_format", "bad_xz"])
def test_bad_input_exits_2_with_one_line_and_leaves_no_paragraphs(tmp_path, case):
  p = tmp_path / "in.txt"
  if case == "empty":
    p.write_text("")
  elif case == "binary":
    p.write_bytes(b"\x7fELF\x00\x01\x02" + os.urandom(4000))
  elif case == "huge_line":  # 200 MB without a newline
    with open(p, "wb") as f:
      block = b"abcdefgh " * (1 << 17)
      for _ in range(200 * (1 << 20) // len(block)):
        f.write(block)
  elif case == "no_paragraphs":
    p.write_text("short\n\nlines\n")
  elif case == "bad_xz":
    p = tmp_path / "in.txt.xz"
    p.write_bytes(lzma.compress(cc100_text(50).encode())[:300])
  extra = ["--format", "nonsense"] if case == "bad_format" else []
  if case == "bad_format":
    p.write_text(cc100_text(2))
  r = brd("corpus", "--workdir", tmp_path / "w", "--input", p, "--no_progress",
          "--gin", "corpus.decontaminate=()", *extra)
  assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
  lines = [l for l in r.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("brd corpus: error:"), r.stderr[-2000:]
  assert not (tmp_path / "w" / "paragraphs").exists()


def test_huge_line_among_good_lines_is_a_counted_skip(tmp_path):
  p = tmp_path / "in.txt"
  with open(p, "wb") as f:
    f.write(cc100_text(3, seed=1).encode())
    f.write(b"y" * (3 << 20) + b"\n\n")
    f.write(cc100_text(3, seed=2).encode())
  s = stage.run(cfg_for([p]), tmp_path / "w", progress=False)
  assert s["paragraphs"] == 18
  assert stage.read_manifest(tmp_path / "w")["dropped"]["line_too_long"] == 1


# ---------------------------------------------------------------- from_task


def test_from_task_builds_a_corpus_of_unlabeled_task_inputs(tmp_path):
  eval_dir()
  r = brd("corpus", "--workdir", tmp_path / "w", "--from_task", "cb", "--no_progress")
  assert r.returncode == 0, r.stderr[-2000:]
  rows = outputs(tmp_path / "w")
  assert 40 <= len(rows) <= 56
  src = (tmp_path / "w" / "inputs" / "task-cb.jsonl").read_text()
  assert "label" not in src and "entailment" not in src
  m = stage.read_manifest(tmp_path / "w")
  assert "cb" not in m["decontamination"] and "rte" in m["decontamination"]
