"""Task loaders on the official files, scoring rules, resumable cache, and `brd eval`."""
import json
import pathlib

import numpy as np
import pytest

import hf_tiny
import needs
from brd_jax import cli
from brd_jax.errors import UserError
from brd_jax.evaluation import harness, tasks
from brd_jax.inference.scoring import LogLik

needs_data = pytest.mark.usefixtures("eval_data")


@needs_data
def test_official_files_load_with_their_documented_counts():
  counts = {"rte": 277, "cb": 56, "boolq": 3270, "sst2": 872, "xnli": 5010, "pawsx": 2000}
  for task, n in counts.items():
    docs = tasks.load(task)
    assert len(docs) == n, task
    golds = {d.gold for d in docs}
    assert golds == set(range(len(docs[0].choices))), task
  rte = tasks.load("rte", limit=1)[0]
  assert rte.context.endswith("True or False?\nAnswer:") and rte.choices == [" True", " False"]
  x = tasks.load("xnli", limit=1)[0]
  assert x.context == "" and ", right? Also, " in x.choices[1]


def test_layout_detection_and_errors(tmp_path):
  (tmp_path / "xnli").mkdir()
  (tmp_path / "xnli" / "xnli.test.tsv").write_text(
      "language\tgold_label\tsentence1\tsentence2\n"
      "en\tneutral\tA man sleeps.\tA man dreams.\nde\tneutral\tEin Mann.\tEin Mann.\n")
  docs = tasks.load("xnli", tmp_path)
  assert len(docs) == 1 and docs[0].gold == 1
  (tmp_path / "pawsx").mkdir()
  (tmp_path / "pawsx" / "test_2k.tsv").write_text("id\tsentence1\tsentence2\tlabel\n1\ta\tb\t1\n")
  assert tasks.load("pawsx", tmp_path)[0].gold == 1
  with pytest.raises(UserError, match="none of"):
    tasks.load("rte", tmp_path)
  with pytest.raises(UserError, match="unknown task"):
    tasks.load("mnli", tmp_path)


def test_scoring_rules_disagree_where_they_should():
  doc = tasks.Doc("ctx", [" a", " bbbbbbbb"], gold=1)
  # Sum prefers the short choice; per-token and per-byte prefer the long one.
  res = harness.score_docs([doc], [[-2.0, -3.0]], [[1, 4]])
  assert res["acc"] == 0.0 and res["acc_mean_token"] == 1.0 and res["acc_norm"] == 1.0


class _CountingScorer:
  """Deterministic fake log-likelihoods; can die after a number of chunks."""

  def __init__(self, die_after=None):
    self.calls, self.scored, self.die_after = 0, 0, die_after

  def loglik(self, reqs, progress=None):
    if self.die_after is not None and self.calls >= self.die_after:
      raise KeyboardInterrupt
    self.calls += 1
    self.scored += len(reqs)
    return [LogLik(-float(len(c) % 7) - 0.1 * len(k), 1 + len(k) // 4, False) for c, k in reqs]


@needs_data
def test_killed_eval_resumes_from_cache_with_identical_results(tmp_path):
  full = harness.evaluate(_CountingScorer(), "fp", ["sst2"], tmp_path / "a", limit=300,
                          chunk_chars=4000)
  dying = _CountingScorer(die_after=3)
  with pytest.raises(KeyboardInterrupt):
    harness.evaluate(dying, "fp", ["sst2"], tmp_path / "b", limit=300, chunk_chars=4000)
  resumed_scorer = _CountingScorer()
  again = harness.evaluate(resumed_scorer, "fp", ["sst2"], tmp_path / "b", limit=300,
                           chunk_chars=4000)
  assert 0 < dying.scored < 600 and again["sst2"]["scored_now"] == 600 - dying.scored
  for k in ("acc", "acc_norm", "acc_mean_token", "n"):
    assert again["sst2"][k] == full["sst2"][k]


def _write_tiny_data(d: pathlib.Path):
  (d / "rte").mkdir(parents=True)
  rows = [{"premise": f"The sky is blue {i}.", "hypothesis": "The sky has a colour.",
           "label": ["entailment", "not_entailment"][i % 2], "idx": i} for i in range(6)]
  (d / "rte" / "val.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  (d / "sst2").mkdir()
  (d / "sst2" / "dev.tsv").write_text("sentence\tlabel\n" + "".join(
      f"a {'good' if i % 2 else 'bad'} film {i}\t{i % 2}\n" for i in range(5)))


def _tiny_tokenizer(model_dir):
  """A 128-token byte-level BPE saved beside a tiny model (vocab 128)."""
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers, trainers
  t = tokenizers.Tokenizer(models.BPE())
  t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  t.decoder = decoders.ByteLevel()
  t.train_from_iterator(["the sky is blue"], trainers.BpeTrainer(
      vocab_size=128, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()[:127],
      special_tokens=["<|endoftext|>"]))
  t.save(str(model_dir / "tokenizer.json"))
  (model_dir / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))


def test_brd_eval_end_to_end_matches_direct_torch_ranking(tmp_path, capsys):
  import torch
  ref = hf_tiny.gpt2(tmp_path / "m")
  _tiny_tokenizer(tmp_path / "m")
  _write_tiny_data(tmp_path / "data")
  out = tmp_path / "out"
  rc = cli.main(["eval", "--model", str(tmp_path / "m"), "--tasks", "rte,sst2", "--out", str(out),
                 "--data_dir", str(tmp_path / "data"), "--log_samples"])
  assert rc == 0, capsys.readouterr().err
  res = json.loads((out / "results.json").read_text())["tasks"]
  assert (out / "results.md").exists() and (out / "results.png").stat().st_size > 1000
  # Independent check: rank each RTE doc's choices with torch, lm-eval tokenisation.
  from brd_jax.inference.scoring import encode_pair
  from brd_jax import tokenizer as tokmod
  btok = tokmod.from_dir(tmp_path / "m")
  hits = []
  for d in tasks.load("rte", tmp_path / "data"):
    scores = []
    for c in d.choices:
      ctx, cont = encode_pair(btok, d.context, c)
      ids = torch.tensor([ctx + cont])
      with torch.no_grad():
        lp = torch.log_softmax(ref(ids).logits[0, :-1], -1)
      tail = range(len(ctx) - 1, len(ctx) + len(cont) - 1)
      scores.append(sum(lp[i, ids[0, i + 1]].item() for i in tail) / len(cont))
    hits.append(int(np.argmax(scores)) == d.gold)
  assert res["rte"]["acc_mean_token"] == pytest.approx(np.mean(hits))
  samples = [json.loads(x) for x in (out / "samples_rte.jsonl").read_text().splitlines()]
  assert len(samples) == 6 and len(samples[0]["loglik"]) == 2
  # A second run is served from the cache.
  assert cli.main(["eval", "--model", str(tmp_path / "m"), "--tasks", "rte", "--out", str(out),
                   "--data_dir", str(tmp_path / "data")]) == 0
  assert json.loads((out / "results.json").read_text())["tasks"]["rte"]["scored_now"] == 0


def test_eval_rejects_unknown_task_before_loading(tmp_path, capsys):
  assert cli.main(["eval", "--model", "nope", "--tasks", "rte,mnli", "--out", str(tmp_path)]) == 2
  assert "mnli" in capsys.readouterr().err


def test_bigbench_json_formatting(tmp_path):
  task = {"task_prefix": "Answer the riddle.", "examples": [
      {"input": "What has keys but no locks?", "target_scores": {"a door": 0, "a piano": 1}},
      {"input": "No choices here", "target": "x"}]}
  (tmp_path / "task.json").write_text(json.dumps(task))
  docs = tasks.load(f"bigbench:{tmp_path / 'task.json'}")
  assert len(docs) == 1
  order = np.random.RandomState(seed=42).permutation(["a door", "a piano"])
  assert docs[0].context == ("Answer the riddle.\nQ: What has keys but no locks?"
                             f"\n  choice: {order[0]}\n  choice: {order[1]}\nA: ")
  assert docs[0].choices == ["a door", "a piano"] and docs[0].gold == 1
  task["append_choices_to_input"] = False
  task["example_output_prefix"] = "\nAnswer: "
  (tmp_path / "task.json").write_text(json.dumps(task))
  assert tasks.load(f"bigbench:{tmp_path / 'task.json'}")[0].context.endswith(
      "locks?\nAnswer: ")
  assert tasks.is_known("bigbench:navigate") and not tasks.is_known("bigbench:")


@pytest.mark.slow
def test_bigbench_asset_tasks_load():
  needs.asset("bigbench-tasks")
  for name, n in {"navigate": 1000, "emoji_movie": 100, "causal_judgment": 190}.items():
    docs = tasks.load(f"bigbench:{name}")
    assert len(docs) == n
    assert all(d.context.endswith("\nA: ") for d in docs)
  with pytest.raises(UserError, match="not found"):
    tasks.load("bigbench:no_such_task")


def check_divergence(got, hs, ht, id_lists, per_doc=None):
  """`got`'s ref_ce / ref_kl / student_nll against torch: student `hs`, teacher `ht`; and, given
  `per_doc`, each text's sums (ce, kl, nll, tokens)."""
  import torch
  ce = kl = nll = n = 0.0
  for j, x in enumerate(id_lists):
    ids = torch.tensor([x])
    with torch.no_grad():
      ls = torch.log_softmax(hs(ids).logits[0, :-1].double(), -1)
      lt = torch.log_softmax(ht(ids).logits[0, :-1].double(), -1)
    pt = lt.exp()
    doc = (float(-(pt * ls).sum()), float((pt * (lt - ls)).sum()),
           float(-ls[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum()), ids.shape[1] - 1)
    if per_doc is not None:
      assert per_doc[j][3] == doc[3]
      np.testing.assert_allclose(per_doc[j][:3], doc[:3], rtol=1e-4, atol=1e-3 * doc[3])
    ce, kl, nll, n = ce + doc[0], kl + doc[1], nll + doc[2], n + doc[3]
  assert got["ref_tokens"] == n
  assert got["ref_ce"] == pytest.approx(ce / n, abs=1e-4)
  assert got["ref_kl"] == pytest.approx(kl / n, abs=1e-4)
  assert got["student_nll"] == pytest.approx(nll / n, abs=1e-4)


def test_teacher_student_divergence_matches_torch(tmp_path):
  import torch
  from brd_jax.checkpoints import resolve
  from brd_jax.evaluation.divergence import Divergence, check_compatible
  hs = hf_tiny.llama(tmp_path / "s", seed=0)
  ht = hf_tiny.llama(tmp_path / "t", seed=1)
  import shutil
  _tiny_tokenizer(tmp_path / "s")  # BPE training is not deterministic: share one tokenizer
  for f in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(tmp_path / "s" / f, tmp_path / "t" / f)
  s, t = resolve.load(str(tmp_path / "s")), resolve.load(str(tmp_path / "t"))
  check_compatible(s.model, s.tokenizer, t.model, t.tokenizer)
  from brd_jax import tokenizer as tokmod
  with pytest.raises(UserError, match="tokenizer"):
    check_compatible(s.model, s.tokenizer, t.model, tokmod.byte_level())
  texts = ["the sky is blue", "blue sky, the end", "is the sky blue? yes it is, mostly blue!"]
  got = Divergence(s.model, t.model, s.tokenizer, token_budget=32).score(texts)
  check_divergence(got, hs, ht, [s.tokenizer.encode(text) for text in texts], got["per_doc"])


def test_brd_eval_reference_model_scores_the_teacher_against_the_student(tmp_path):
  """`brd eval --model S --reference_model T` end to end: each task's ref_ce / ref_kl /
  student_nll are CE(p_T, p_S), KL(p_T || p_S) and the student's NLL over context + gold answer,
  as torch computes them from the two HF dirs (swapping the models changes all three)."""
  import subprocess
  import sys
  import torch
  import transformers
  import tiny_teacher
  from cli_run import ROOT
  from brd_jax import tokenizer as tokmod
  s_dir, t_dir = tiny_teacher.make(tmp_path / "s", seed=0), tiny_teacher.make(tmp_path / "t", seed=1)
  examples = [{"input": f"Is {i} odd?", "target_scores": {"yes": i % 2, "no": 1 - i % 2}}
              for i in range(5)]
  (tmp_path / "odd.json").write_text(json.dumps({"name": "odd", "examples": examples}))
  task = f"bigbench:{tmp_path / 'odd.json'}"
  r = subprocess.run([sys.executable, "-m", "brd_jax.cli", "eval", "--model", str(s_dir),
                      "--reference_model", str(t_dir), "--tasks", task, "--workdir",
                      str(tmp_path / "out"), "--no_progress", "--log_samples"], cwd=ROOT,
                     capture_output=True,
                     text=True)
  assert r.returncode == 0, r.stderr[-3000:]
  got = json.loads((tmp_path / "out" / "results.json").read_text())["tasks"][task]
  hs, ht = (transformers.AutoModelForCausalLM.from_pretrained(d).eval() for d in (s_dir, t_dir))
  tok = tokmod.byte_level()
  per_doc = [json.loads(l)["ref"] for l in harness.samples_path(tmp_path / "out", task).open()]
  check_divergence(got, hs, ht, [tok.encode(d.context + d.choices[d.gold], add_bos=None)
                                 for d in tasks.load(task)], per_doc)

  # eval.divergence_limit: CE / KL on the first 3 documents only, every document still scored
  r = subprocess.run([sys.executable, "-m", "brd_jax.cli", "eval", "--model", str(s_dir),
                      "--reference_model", str(t_dir), "--tasks", task, "--workdir",
                      str(tmp_path / "out3"), "--no_progress", "--log_samples",
                      "--divergence_limit", "3"], cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-3000:]
  got3 = json.loads((tmp_path / "out3" / "results.json").read_text())["tasks"][task]
  samples3 = [json.loads(l) for l in harness.samples_path(tmp_path / "out3", task).open()]
  assert [d.get("ref") for d in samples3] == per_doc[:3] + [None, None]
  assert got3["acc"] == got["acc"] and got3["n"] == 5 and got3["divergence_docs"] == 3
  assert got3["ref_tokens"] == sum(d[3] for d in per_doc[:3]) < got["ref_tokens"]
  assert got3["ref_ce"] == pytest.approx(sum(d[0] for d in per_doc[:3]) / got3["ref_tokens"])
  assert "CE / KL on the first documents only: " in (tmp_path / "out3" / "results.md").read_text()


def test_report_lays_runs_side_by_side(tmp_path, capsys):
  for name, accs in (("a", {"rte": 0.5, "cb": 0.25}), ("b", {"rte": 0.75})):
    (tmp_path / name).mkdir()
    tasks_json = {t: {r: v for r in harness.RULES} for t, v in accs.items()}
    (tmp_path / name / "results.json").write_text(json.dumps({"model": name, "tasks": tasks_json}))
  assert cli.main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                   str(tmp_path / "cmp.md")]) == 0
  out = capsys.readouterr().out
  row_a = next(l for l in out.splitlines() if l.startswith(f"| {tmp_path / 'a'} "))
  row_b = next(l for l in out.splitlines() if l.startswith(f"| {tmp_path / 'b'} "))
  assert "| 50.0 | 25.0 | 37.5 |" in row_a
  assert "| 75.0 | – | 75.0* |" in row_b
  assert (tmp_path / "cmp.png").stat().st_size > 1000
  assert cli.main(["report", str(tmp_path / "nope")]) == 2


def test_fewshot_demonstrations_never_include_the_document():
  docs = [tasks.Doc(f"ctx {i}\nAnswer:", [" yes", " no"], i % 2) for i in range(10)]
  shot = tasks.fewshot(docs, 3)
  assert shot == tasks.fewshot(docs, 3)  # deterministic
  for i, d in enumerate(shot):
    parts = d.context.split("\n\n")
    assert len(parts) == 4 and parts[-1] == docs[i].context and d.choices == docs[i].choices
    for demo in parts[:3]:
      j = int(demo.split()[1])
      assert j != i and demo == docs[j].context + docs[j].choices[docs[j].gold]
  nli = tasks.fewshot([tasks.Doc("", [" a, right? Yes, b", " a, right? No, b"], 0)] * 3, 1)
  assert nli[0].context == "a, right? Yes, b\n\n" and nli[0].choices[0] == "a, right? Yes, b"
  with pytest.raises(UserError):
    tasks.fewshot(docs[:2], 2)


def test_hf_saved_datasets_give_the_same_docs_as_the_files(tmp_path, eval_data):
  import datasets
  SHARED = eval_data  # pylint: disable=invalid-name
  rows = {
      "rte": tasks._jsonl(SHARED / "rte" / "val.jsonl")[:40],
      "cb": tasks._jsonl(SHARED / "cb" / "val.jsonl"),
      "boolq": tasks._jsonl(SHARED / "boolq" / "val.jsonl")[:20],
      "xnli": tasks._jsonl(SHARED / "xnli" / "derived_format" / "test-en.hf.jsonl")[:30],
  }
  sst = [r for r in tasks._tsv(SHARED / "sst2" / "dev.tsv")[1:] if r][:30]
  rows["sst2"] = [{"sentence": r[0], "label": int(r[-1])} for r in sst]
  paws = tasks._tsv(SHARED / "pawsx" / "derived_format" / "dev-en.xtreme.tsv")[:30]
  rows["pawsx"] = [{"sentence1": a, "sentence2": b, "label": int(c)} for a, b, c in paws]
  for task, rs in rows.items():
    if task == "rte":  # the HF schema has integer labels
      rs = [{**r, "label": 0 if r["label"] == "entailment" else 1} for r in rs]
    if task == "cb":
      rs = [{**r, "label": {"entailment": 0, "contradiction": 1, "neutral": 2}[r["label"]]}
            for r in rs]
    datasets.Dataset.from_list(rs).save_to_disk(str(tmp_path / task))
    got = tasks.load(task, f"hf:{tmp_path}")
    want = tasks.load(task)[:len(rs)]
    assert got == want, task
  with pytest.raises(UserError, match="rte"):
    tasks.load("rte", f"hf:{tmp_path / 'missing'}")
  with pytest.raises(UserError, match="TFDS"):
    tasks.load("rte", f"tfds:{tmp_path / 'no_tfds'}")
  with pytest.raises(UserError, match="no TFDS builder"):
    tasks.load("xnli", "tfds")


@needs_data
def test_chunks_keep_a_documents_candidates_together_longest_first():
  docs = tasks.load("cb", None)
  chunks = harness._chunks(docs, harness.Cache(pathlib.Path("/nonexistent/cache.jsonl")), 3000)
  assert len(chunks) > 3 and sum(map(len, chunks)) == 3 * len(docs)
  assert all(len(c) % 3 == 0 for c in chunks)  # CB: three candidates, never split
  lengths = [len(ctx) for c in chunks for _, (ctx, _) in c]
  assert lengths == sorted(lengths, reverse=True)


def test_cache_after_a_torn_write_starts_a_fresh_line(tmp_path):
  path = tmp_path / "cache.jsonl"
  cache = harness.Cache(path)
  cache.add([("a", (-1.0, 1, True))])
  with open(path, "ab") as f:
    f.write(b'{"k": "b", "ll": -2.')  # a write cut by a full disk or a kill
  harness.Cache(path).add([("c", (-3.0, 2, False))])
  assert harness.Cache(path).data == {"a": (-1.0, 1, True), "c": (-3.0, 2, False)}
