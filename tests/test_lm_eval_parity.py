"""`brd eval` against lm-evaluation-harness 0.4.13 itself: lm-eval's shipped task definitions
(its YAML, document processing and Task objects) build the requests from the official files, read
by HF `datasets`' own json / csv builders into the schema of the Hub dataset each YAML names (not by
the project's reader), and they must equal the project's, document by document; on a sample,
lm-eval's HF backend scores them with the same SmolLM2 weights and its own metric code picks the
answers. (`lm_eval_task`, used by the sample, the acc_norm check and `brd bench eval`, writes rows
the project read to a JSON file and points lm-eval's task YAML at it.)"""
import csv
import json
import pathlib

import numpy as np
import pytest

import needs

from brd_jax.benchmarks.eval import LM_EVAL, lm_eval_task  # rows -> lm-eval's own Task
from brd_jax.evaluation import tasks

DATA = tasks.default_data_dir()

_need_data = needs.eval_data


def requests_by_doc(t) -> list[list[tuple[str, str]]]:
  """lm-eval's requests, (context, continuation) per candidate, grouped by document."""
  if not getattr(t, "_instances", None):
    t.build_all_requests(limit=None, rank=0, world_size=1)
  out: dict[int, list] = {}
  for inst in sorted(t.instances, key=lambda i: (i.doc_id, i.idx)):
    out.setdefault(inst.doc_id, []).append(tuple(inst.arguments))
  return [out[k] for k in sorted(out)]


# task -> the datasets builder, the official file, the builder's options and the label names of
# the Hub dataset lm-eval's YAML loads (aps/super_glue, nyu-mll/glue, facebook/xnli, paws-x):
# its doc_to_target is that ClassLabel's integer.
_TSV = {"delimiter": "\t", "quoting": csv.QUOTE_NONE, "keep_default_na": False}
OFFICIAL = {
    "rte": ("json", "rte/val.jsonl", {}, ["entailment", "not_entailment"]),
    "cb": ("json", "cb/val.jsonl", {}, ["entailment", "contradiction", "neutral"]),
    "boolq": ("json", "boolq/val.jsonl", {}, ["False", "True"]),
    "sst2": ("csv", "sst2/dev.tsv", _TSV, ["negative", "positive"]),
    "xnli": ("json", "xnli/derived_format/test-en.hf.jsonl", {},  # HF schema (SOURCES.md)
             ["entailment", "neutral", "contradiction"]),
    "pawsx": ("csv", "pawsx/derived_format/dev-en.xtreme.tsv",  # XTREME: no header, no id
              {**_TSV, "column_names": ["sentence1", "sentence2", "label"]}, ["0", "1"]),
}


def official_task(task: str, tmp: pathlib.Path):
  """lm-eval's own Task for `task` on the official file, loaded by `datasets` (lm-eval's
  `custom_dataset` hook stands in for its Hub download), as the split the YAML evaluates."""
  import datasets
  import lm_eval
  from lm_eval.api.task import ConfigurableTask
  from lm_eval.tasks._yaml_loader import load_yaml
  cfg = load_yaml(pathlib.Path(lm_eval.__file__).parent / "tasks" / LM_EVAL[task])
  key = "test_split" if cfg.get("test_split") else "validation_split"
  split = cfg[key]
  builder, file, kwargs, names = OFFICIAL[task]
  ds = datasets.load_dataset(builder, data_files={split: str(DATA / file)},
                             cache_dir=str(tmp / "hf"), **kwargs)
  if ds[split].features["label"].dtype == "bool":  # BoolQ's JSON booleans
    ds = ds.cast_column("label", datasets.Value("int64"))
  ds = ds.cast_column("label", datasets.ClassLabel(names=names))
  cfg.update(custom_dataset=lambda **_: ds, dataset_kwargs=None, training_split=None,
             validation_split=None, test_split=None, fewshot_split=None)
  cfg[key] = split
  return ConfigurableTask(config=cfg)


@pytest.mark.parametrize("task", list(LM_EVAL))
def test_every_request_of_the_official_files_equals_lm_evals(task, tmp_path):
  _need_data()
  ours = tasks.load(task, DATA)
  t = official_task(task, tmp_path)
  theirs = requests_by_doc(t)
  assert len(ours) == len(theirs) > 50
  for i, (d, req) in enumerate(zip(ours, theirs)):
    assert [(d.context, c) for c in d.choices] == req, (task, i)
  golds = [t.doc_to_target(doc) for doc in t.eval_docs]
  assert [d.gold for d in ours] == golds


def test_acc_norm_divides_by_characters_as_lm_eval_does(tmp_path):
  """Non-ASCII choices, where characters and UTF-8 bytes rank the candidates differently."""
  from brd_jax.evaluation.harness import score_docs
  rows = [{"sentence": "x", "label": 1}]
  t = lm_eval_task("sst2", rows, tmp_path)
  t.config.doc_to_choice = ["négatif", "positive"]  # 7 characters, 8 bytes; 8 and 8
  doc = list(t.eval_docs)[0]
  lls = [-7.35, -8.2]  # per character -1.050 < -1.025; per byte -0.919 > -1.025
  theirs = t.process_results(doc, [(ll, False) for ll in lls])
  ours = score_docs([tasks.Doc("x", [" négatif", " positive"], 1)], [lls], [[2, 2]])
  assert (ours["acc"], ours["acc_norm"]) == (theirs["acc"], theirs["acc_norm"]) == (0.0, 1.0)


@pytest.mark.slow
@pytest.mark.real_model
def test_logliks_and_answers_equal_lm_evals_on_a_sample(smollm2_gguf, tmp_path):
  """Every task, 6 documents each: lm-eval's HFLM and its process_results against the scorer and
  the harness's rules, with the same SmolLM2-135M-Instruct weights in fp32."""
  _need_data()
  from lm_eval.models.huggingface import HFLM
  from brd_jax.checkpoints import hf, resolve
  from brd_jax.evaluation.harness import score_docs
  from brd_jax.inference.scoring import Scorer
  loaded = resolve.load(str(smollm2_gguf))
  hf.export_dir(loaded.model, tmp_path / "hf", loaded.tokenizer)
  lm = HFLM(pretrained=str(tmp_path / "hf"), device="cpu", dtype="float32", batch_size=8)
  scorer = Scorer(loaded.model, loaded.tokenizer, None, token_budget=4096)
  checked, worst, worst_abs = 0, [], []
  for task in LM_EVAL:
    rows = tasks.ROWS[task](DATA)
    t = lm_eval_task(task, rows, tmp_path)
    ours_all, by_doc = tasks.load(task, DATA), requests_by_doc(t)
    docs = list(t.eval_docs)
    for i in np.linspace(0, len(ours_all) - 1, 6).astype(int):
      insts = sorted((x for x in t.instances if x.doc_id == i), key=lambda x: x.idx)
      theirs = lm.loglikelihood(insts, disable_tqdm=True)
      mine = scorer.loglik(by_doc[i])
      diffs = [abs(m.loglik - ll) for m, (ll, _) in zip(mine, theirs)]
      worst.append(max(d / m.n_tokens for d, m in zip(diffs, mine)))
      worst_abs.append(max(diffs))
      # fp32 sums of n token log-probs: within 1e-4, or 2e-5 per token, or 1e-5 of the sum
      # (~80 fp32 ulps), whichever is largest. Measured on this AVX-512/AMX machine: XNLI doc 4007's
      # 33-token continuations, sums near -160, differ by 6-7e-4 (2.1e-5 a token, 4.3e-6 of the
      # sum; the same at af37e53), the rounding of two kernels' accumulation orders through 30
      # layers; a wrong request (another context or continuation) differs by 1e-2 or more.
      assert all(d <= max(1e-4, 2e-5 * m.n_tokens, 1e-5 * abs(m.loglik))
                 for d, m in zip(diffs, mine)), (
          task, i, diffs, [(m.n_tokens, m.loglik) for m in mine])
      metrics = t.process_results(docs[i], theirs)
      s = score_docs([ours_all[i]], [[m.loglik for m in mine]], [[m.n_tokens for m in mine]])
      assert (s["acc"], s["acc_norm"]) == (metrics["acc"], metrics["acc_norm"]), (task, i)
      checked += 1
  assert checked == 36
  print(f"max |loglik diff| {max(worst_abs):.2e}, per token {max(worst):.2e}")


@pytest.mark.slow
@pytest.mark.real_model
def test_bench_eval_times_both_sides_per_task_and_refuses_bad_input(smollm2_gguf, tmp_path):
  _need_data()
  from cli_run import brd
  r = brd("bench", "eval", "--model", str(smollm2_gguf), "--tasks", "cb,pawsx", "--limit", "6",
          "--data_dir", str(DATA), "--out", str(tmp_path / "b.json"))
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads((tmp_path / "b.json").read_text())
  assert sorted(out["tasks"]) == ["cb", "pawsx"]
  for t, v in out["tasks"].items():
    assert v["docs"] == 6 and v["project_s"] > 0 and v["peer_s"] > 0
    assert v["lm_eval_brd_jax_s"] > 0 and len(v["acc"]) == 3
    assert len(set(v["acc"])) == 1 and len(set(v["acc_norm"])) == 1, t  # all three columns
  assert "cb (6 docs)" in r.stdout and "slowest task" in r.stdout
  for bad, what in ((["--tasks", "cb,nope"], "nope"), (["--data_dir", str(tmp_path / "x")], "x")):
    r = brd("bench", "eval", "--model", str(smollm2_gguf), "--limit", "2", *bad)
    assert r.returncode == 2 and what in r.stderr and "Traceback" not in r.stderr, r.stderr
