"""`--model brd_jax` in lm-evaluation-harness 0.4.13, against lm-eval's own HF backend (HFLM) and
transformers: the same log-likelihoods, rolling log-likelihoods, greedy generations and, through
lm-eval's command line on its own task definitions, the same per-document predictions."""
import glob
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import hf_tiny
import needs
from cli_run import ROOT
from test_evaluation import _tiny_tokenizer

from brd_jax.evaluation import lm_eval_model  # lm-eval is a test dependency
from lm_eval.api.instance import Instance


def _inst(kind, args, i=0):
  return Instance(request_type=kind, doc={}, arguments=args, idx=i)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """A random tiny Llama (128 positions) with a BPE tokenizer, loaded by both backends."""
  from lm_eval.models.huggingface import HFLM
  d = tmp_path_factory.mktemp("tiny")
  hf_tiny.llama(d, seed=3)
  _tiny_tokenizer(d)
  # the model's EOS is the tokenizer's special <|endoftext|> (id 0), as in a released model; with
  # hf_tiny's id 2 (the byte '#' here) transformers would keep and print the token it stops at
  for f in ("config.json", "generation_config.json"):
    cfg = json.loads((d / f).read_text())
    cfg["eos_token_id"] = 0
    (d / f).write_text(json.dumps(cfg))
  ours = lm_eval_model.BrdLM(pretrained=str(d), token_budget=512, batch_size=8, max_gen_toks=24)
  theirs = HFLM(pretrained=str(d), device="cpu", dtype="float32", batch_size=8, max_length=128)
  return d, ours, theirs


def test_loglikelihood_and_rolling_equal_hflms(tiny):
  _, ours, theirs = tiny
  pairs = [("the sky", " is blue"), ("the sky", " is the sky"), ("", "blue sky"),
           ("is the sky blue?", " yes it is"), ("sky ", "blue")]
  reqs = [_inst("loglikelihood", p, i) for i, p in enumerate(pairs)]
  a, b = ours.loglikelihood(reqs, True), theirs.loglikelihood(reqs, True)
  assert [g for _, g in a] == [g for _, g in b]
  np.testing.assert_allclose([x for x, _ in a], [x for x, _ in b], atol=1e-4)
  # one text much longer than the 128-token window: several rolling windows
  texts = ["the sky is blue", " ".join(["the sky is blue, is it?"] * 30), "blue"]
  rolls = [_inst("loglikelihood_rolling", (t,), i) for i, t in enumerate(texts)]
  ra, rb = ours.loglikelihood_rolling(rolls, True), theirs.loglikelihood_rolling(rolls, True)
  assert len(theirs.tok_encode(texts[1])) > 3 * 128
  np.testing.assert_allclose(ra, rb, rtol=1e-5, atol=1e-3)
  assert len(set(np.round(ra, 3))) == 3


def test_generate_until_equals_transformers_greedy_generate(tiny):
  """16 prompts, greedy, stop sequences and max_gen_toks as lm-eval passes them: the text is
  transformers' greedy continuation cut at the first stop sequence (mid-token too). The engine
  itself is checked against transformers on the real SmolLM2 in tests/test_smollm2.py."""
  import torch
  import transformers
  d, ours, _ = tiny
  model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
  tok = transformers.AutoTokenizer.from_pretrained(d)
  words = ["the", "sky", "is", "blue", "sky,", "the end", "blue?", "it is"]
  rng = np.random.default_rng(0)
  prompts = [" ".join(rng.choice(words, size=int(rng.integers(1, 6)))) for _ in range(16)]
  kwargs = [{"until": ["e"], "max_gen_toks": 16},
            {"until": ["ky", "\n\n"], "max_gen_toks": 16, "do_sample": False}]
  reqs = [_inst("generate_until", (p, kwargs[i % 2]), i) for i, p in enumerate(prompts)]
  got = ours.generate_until(reqs, True)
  want, cut = [], 0
  for p, kw in ((r.args[0], r.args[1]) for r in reqs):
    ids = tok(p, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
      out = model.generate(ids, max_new_tokens=kw["max_gen_toks"], do_sample=False,
                           attention_mask=torch.ones_like(ids), pad_token_id=tok.eos_token_id)
    text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    whole = text
    for stop in kw["until"]:
      text = text.split(stop)[0]
    cut += text != whole
    want.append(text)
  assert got == want
  assert sum(1 for w in want if w) >= 8, want  # not all empty


def _task_yamls(root: pathlib.Path, per_task: int) -> list[str]:
  """lm-eval's own YAML for each of the six tasks (included, not copied), pointed at a sample
  of the official file's rows written as a local JSON file."""
  import lm_eval
  import yaml
  from lm_eval.tasks._yaml_loader import load_yaml
  from brd_jax.benchmarks.eval import LM_EVAL, hf_rows
  from brd_jax.evaluation import tasks
  names = []
  for task, rel in LM_EVAL.items():
    src = pathlib.Path(lm_eval.__file__).parent / "tasks" / rel
    cfg = load_yaml(src)
    key = "test_split" if cfg.get("test_split") else "validation_split"
    rows = tasks.ROWS[task](tasks.default_data_dir())
    pick = [rows[i] for i in np.linspace(0, len(rows) - 1, per_task).astype(int)]
    data = root / f"{task}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in hf_rows(task, pick)))
    name = f"brdt_{task}"
    (root / f"{name}.yaml").write_text(yaml.safe_dump({
        "include": str(src), "task": name, "dataset_path": "json", "dataset_name": None,
        "dataset_kwargs": {"data_files": {cfg[key]: str(data)}}, "training_split": None,
        "validation_split": None, "test_split": None, "fewshot_split": None,
        key: cfg[key], "tag": []}))
    names.append(name)
  return names


def _samples(out: pathlib.Path, task: str) -> dict:
  files = glob.glob(str(out / "**" / f"samples_{task}_*.jsonl"), recursive=True)
  assert len(files) == 1, (task, files)
  return {d["doc_id"]: d for d in map(json.loads, open(files[0], encoding="utf-8"))}


@pytest.mark.slow
@pytest.mark.real_model
def test_lm_eval_cli_with_brd_jax_predicts_what_hf_does_on_the_six_tasks(smollm2_gguf, tmp_path):
  """`brd-lm-eval run --model brd_jax` and `lm_eval run --model hf` on the same HF export of
  SmolLM2-135M-Instruct, 4 documents of each official file, lm-eval's task definitions: every
  document's log-likelihoods (fp32 tolerance) and predictions (acc) agree."""
  needs.eval_data()
  from brd_jax.checkpoints import hf, resolve
  loaded = resolve.load(str(smollm2_gguf))
  hf.export_dir(loaded.model, tmp_path / "hf", loaded.tokenizer)
  (tmp_path / "tasks").mkdir()
  names = _task_yamls(tmp_path / "tasks", 4)
  common = ["run", "--tasks", *names, "--include_path", str(tmp_path / "tasks"), "--log_samples",
            "--batch_size", "8"]
  runs = {"brd": [sys.executable, "-m", "brd_jax.evaluation.lm_eval_model", *common, "--model",
                  "brd_jax", "--model_args", f"pretrained={tmp_path / 'hf'}",
                  "--output_path", str(tmp_path / "out_brd")],
          "hf": [sys.executable, "-m", "lm_eval", *common, "--model", "hf", "--model_args",
                 f"pretrained={tmp_path / 'hf'},dtype=float32", "--device", "cpu",
                 "--output_path", str(tmp_path / "out_hf")]}
  # one CPU device, as a user runs it here: under the suite's 8 fake devices each batch has at
  # least 8 rows, and 8 rows of a 2k-token bucket took 14.8 GB (CI's OOM kill)
  env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "").replace(
      "--xla_force_host_platform_device_count=8", "").strip()}
  if not env["XLA_FLAGS"]:
    del env["XLA_FLAGS"]  # XLA takes a blank value for a flag file's name
  for side, cmd in runs.items():
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, (side, r.stderr[-4000:])
  checked = 0
  for name in names:
    a, b = _samples(tmp_path / "out_brd", name), _samples(tmp_path / "out_hf", name)
    assert a.keys() == b.keys() and len(a) == 4
    for i in a:
      la = [float(x[0]) for x in a[i]["filtered_resps"]]
      lb = [float(x[0]) for x in b[i]["filtered_resps"]]
      np.testing.assert_allclose(la, lb, atol=2e-3, rtol=1e-5, err_msg=f"{name} doc {i}")
      assert a[i]["acc"] == b[i]["acc"] and int(np.argmax(la)) == int(np.argmax(lb)), (name, i)
      checked += 1
  assert checked == 24
