"""The `brd` command: fast help, sub-command help, one-line errors with exit code 2."""
import json
import os
import subprocess
import sys
import time

import pytest

import hf_tiny
from brd_jax import cli

SUBCOMMANDS = ["corpus", "generate", "train", "eval", "pipeline", "convert", "complete", "loglik",
               "plan", "bench", "assets", "plot", "report"]


def _brd(*args, timeout=120):
  return subprocess.run([sys.executable, "-m", "brd_jax.cli", *args], capture_output=True,
                        text=True, timeout=timeout, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_help_is_fast_and_lists_every_stage():
  t = time.perf_counter()
  r = _brd("--help")
  elapsed = time.perf_counter() - t
  assert r.returncode == 0
  for name in SUBCOMMANDS:
    assert name in r.stdout
  assert elapsed < 3.0, f"brd --help took {elapsed:.1f}s"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help(name):
  with pytest.raises(SystemExit) as e:
    cli.main([name, "--help"])
  assert e.value.code == 0


def test_bad_gin_binding_is_one_line_and_exit_2(tmp_path):
  r = _brd("convert", "--model", "x", "--to", str(tmp_path / "o"), "--gin", "model.d_modle = 3")
  assert r.returncode == 2
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and "model.d_modle" in lines[0], r.stderr


def test_unknown_flag_is_one_line_and_exit_2():
  r = _brd("convert", "--nope")
  assert r.returncode == 2
  assert len(r.stderr.strip().splitlines()) == 1


def test_convert_then_complete_on_a_tiny_model(tmp_path, capsys):
  hf_tiny.llama(tmp_path / "src")
  assert cli.main(["convert", "--model", str(tmp_path / "src"), "--to", str(tmp_path / "out")]) == 0
  assert (tmp_path / "out" / "config.json").exists()
  assert (tmp_path / "out" / "brd" / "config.gin").exists()
  # Converting onto a non-empty directory is refused and keeps what is there.
  assert cli.main(["convert", "--model", str(tmp_path / "src"), "--to", str(tmp_path / "out")]) == 2
  assert "exists" in capsys.readouterr().err
  assert (tmp_path / "out" / "model.safetensors").exists()


def test_complete_needs_a_tokenizer_and_valid_jsonl(tmp_path, capsys):
  hf_tiny.llama(tmp_path / "m")
  (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{"text": 1}\n')
  rc = cli.main(["complete", "--model", str(tmp_path / "m"), "--prompts",
                 str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o.jsonl")])
  assert rc == 2
  assert "bad.jsonl:2" in capsys.readouterr().err
  assert not (tmp_path / "o.jsonl").exists()


def test_complete_settings_are_gin_bindings_and_flags(tmp_path, capsys):
  import tiny_teacher
  teacher = tiny_teacher.make(tmp_path / "t")
  (tmp_path / "p.jsonl").write_text('{"prompt": "one"}\n{"prompt": "two", "id": 7}\n')
  for extra in (["--max_new_tokens", "5"], ["--gin", "complete.max_new_tokens=5"]):
    rc = cli.main(["complete", "--model", str(teacher), "--prompts", str(tmp_path / "p.jsonl"),
                   "--out", str(tmp_path / "o.jsonl"), "--chat", *extra])
    assert rc == 0, capsys.readouterr().err
    rows = [json.loads(l) for l in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r.get("id") for r in rows] == [None, 7]
    assert all(len(r["completion"]) <= 5 for r in rows)  # 5 byte tokens: <= 5 characters


def test_assets_list_and_unknown_asset(capsys):
  assert cli.main(["assets", "list"]) == 0
  assert "smollm2-135m-instruct" in capsys.readouterr().out
  assert cli.main(["assets", "path", "nope"]) == 2
  assert "unknown asset" in capsys.readouterr().err


def test_launch_scripts_dry_run():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  r = subprocess.run([f"{root}/launch/gpu.sh", "--dry-run", "--hosts", "h1,h2", "--", "brd",
                      "train"], capture_output=True, text=True, check=True)
  lines = r.stdout.strip().splitlines()
  assert len(lines) == 2 and "BRD_PROCESS_ID=1" in lines[1] and "BRD_COORDINATOR=h1" in lines[1]
  r = subprocess.run([f"{root}/launch/tpu_vm.sh", "--dry-run", "--tpu", "t", "--zone", "z", "--",
                      "brd", "train"], capture_output=True, text=True, check=True)
  assert "--worker=all" in r.stdout and "git -C" in r.stdout
  r = subprocess.run([f"{root}/launch/tpu_vm.sh", "--dry-run"], capture_output=True, text=True)
  assert r.returncode == 2


def test_loglik_command(tmp_path):
  hf_tiny.llama(tmp_path / "m")
  # The tiny model needs a tokenizer: borrow a byte-level one trained on the fly.
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers, trainers
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(["hello world"] * 5, trainers.BpeTrainer(
      vocab_size=128, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()[:100],
      special_tokens=["<s>"]))
  tok.save(str(tmp_path / "m" / "tokenizer.json"))
  (tmp_path / "m" / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>"}))
  reqs = tmp_path / "r.jsonl"
  reqs.write_text('{"context": "hello", "continuation": " world", "id": 7}\n'
                  '{"context": "", "continuation": "hello"}\n')
  out = tmp_path / "o.jsonl"
  assert cli.main(["loglik", "--model", str(tmp_path / "m"), "--requests", str(reqs),
                   "--out", str(out)]) == 0
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert rows[0]["id"] == 7 and rows[0]["loglik"] < 0 and rows[0]["n_tokens"] >= 1
  assert isinstance(rows[1]["is_greedy"], bool)
  reqs.write_text('{"context": "hello"}\n')
  assert cli.main(["loglik", "--model", str(tmp_path / "m"), "--requests", str(reqs),
                   "--out", str(tmp_path / "o2.jsonl")]) == 2


def test_train_without_data_is_one_line_and_exit_2(tmp_path):
  r = _brd("train", "--workdir", str(tmp_path / "w"), "--gin_file", "models/llama_tiny",
           "--gin", "student.tokenizer='bytes'", "--gin", "model.vocab_size=320")
  assert r.returncode == 2, r.stderr
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and "data.paragraphs_dir" in lines[0], r.stderr


def test_train_with_a_missing_paragraphs_dir_names_it(tmp_path):
  r = _brd("train", "--workdir", str(tmp_path / "w"), "--gin_file", "models/llama_tiny",
           "--gin", "student.tokenizer='bytes'", "--gin", "model.vocab_size=320",
           "--gin", f"data.paragraphs_dir='{tmp_path / 'nope'}'")
  assert r.returncode == 2
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and "nope" in lines[0], r.stderr


BAD_FLAGS = [  # (sub-command and required flags, the flag, an invalid value)
    (["complete", "--model", "m", "--prompt", "p"], "--batch_size", "0"),
    (["complete", "--model", "m", "--prompt", "p"], "--max_new_tokens", "-3"),
    (["complete", "--model", "m", "--prompt", "p"], "--temperature", "-1"),
    (["complete", "--model", "m", "--prompt", "p"], "--top_k", "abc"),
    (["complete", "--model", "m", "--prompt", "p"], "--top_p", "1.5"),
    (["complete", "--model", "m", "--prompt", "p"], "--seed", "x"),
    (["eval", "--model", "m", "--out", "o"], "--limit", "0"),
    (["eval", "--model", "m", "--out", "o"], "--num_fewshot", "-1"),
    (["eval", "--model", "m", "--out", "o"], "--token_budget", "0"),
    (["eval", "--model", "m", "--out", "o"], "--tasks", "rte,nonsense"),
    (["loglik", "--model", "m", "--requests", "r", "--out", "o"], "--token_budget", "-5"),
    (["bench", "decode"], "--batch", "0"),
    (["bench", "decode"], "--repeats", "0"),
    (["bench", "train"], "--seq_len", "0"),
    (["bench", "train"], "--steps", "-1"),
    (["bench", "corpus"], "--mb", "0"),
    (["bench", "corpus"], "--processes", "0"),
    (["corpus", "--workdir", "w", "--input", "i"], "--num_processes", "0"),
    (["corpus", "--workdir", "w", "--input", "i"], "--process_index", "-1"),
    (["corpus", "--workdir", "w", "--input", "i"], "--format", "pdf"),
    (["generate", "--paragraphs", "p", "--out", "o"], "--topk", "-1"),
    (["generate", "--paragraphs", "p", "--out", "o"], "--limit", "0"),
    (["generate", "--paragraphs", "p", "--out", "o"], "--batch_size", "0"),
    (["generate", "--paragraphs", "p", "--out", "o"], "--num_processes", "0"),
    (["generate", "--paragraphs", "p", "--out", "o"], "--process_index", "-2"),
    (["report", "r"], "--rule", "best"),
    (["pipeline", "--workdir", "w"], "--gin_file", "no/such/config"),
    (["assets"], "fetch", "no-such-asset"),
    (["complete", "--model", "m", "--prompt", "p"], "--gin", "complete.top_p=1.5"),
    (["complete", "--prompt", "p"], "--model", "/no/such/model"),
    (["convert", "--to", "o"], "--model", "/no/such/model"),
    (["convert", "--model", "m", "--to", "o"], "--dtype", "int3"),
    (["loglik", "--model", "m", "--out", "o"], "--requests", "/no/such.jsonl"),
    (["eval", "--model", "m", "--workdir", "o"], "--data_dir", "/no/such/dir"),
    (["corpus", "--workdir", "w"], "--input", "/no/such/text.txt"),
    (["corpus", "--workdir", "w"], "--from_task", "no_such_task"),
    (["generate", "--ledger", "l", "--teacher", "t"], "--paragraphs", "/no/such/paragraphs"),
    (["generate", "--paragraphs", "p", "--ledger", "l"], "--behaviors", "ner,poetry"),
    (["train"], "--workdir", "w"),
    (["plot"], "/no/such/workdir", "--out=x.png"),
    (["report"], "/no/such/run", "--rule=acc"),
    (["bench", "split"], "--input", "/no/such/text.txt"),
    (["eval", "--model", "m", "--workdir", "o"], "--gin", "eval.limit=-1"),
]


@pytest.mark.parametrize("base, flag, value", BAD_FLAGS,
                         ids=[f"{b[0]}{f}={v}" for b, f, v in BAD_FLAGS])
def test_every_invalid_flag_value_is_one_line_and_exit_2(base, flag, value, capsys, tmp_path,
                                                         monkeypatch):
  monkeypatch.chdir(tmp_path)  # relative paths in the argv stay inside the test's directory
  try:
    code = cli.main([*base, flag, value])
  except SystemExit as e:
    code = e.code
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if l.strip()]
  assert code == 2, err
  assert len(lines) == 1 and lines[0].startswith("brd ") and "Traceback" not in err, err
  assert not (tmp_path / "w" / "paragraphs").exists()


def test_verbose_flag_works_after_the_subcommand_too():
  args = cli.build_parser().parse_args(["assets", "list", "-v"])
  assert args.verbose is True
  assert cli.build_parser().parse_args(["-v", "assets", "list"]).verbose is True
  assert cli.build_parser().parse_args(["assets", "list"]).verbose is False


def test_consistent_flag_names_keep_their_old_spellings():
  parse = cli.build_parser().parse_args
  assert parse(["eval", "--model", "m", "--workdir", "d"]).workdir == "d"
  assert parse(["eval", "--model", "m", "--out", "d"]).workdir == "d"
  assert parse(["generate", "--paragraphs", "p", "--ledger", "l"]).ledger == "l"
  assert parse(["generate", "--paragraphs", "p", "--out", "l"]).ledger == "l"
  a = parse(["bench", "decode", "--json", "f.json", "--batch", "4"])
  assert (a.out, a.batch_size) == ("f.json", 4)
  a = parse(["bench", "decode", "--out", "f.json", "--batch_size", "4"])
  assert (a.out, a.batch_size) == ("f.json", 4)


def test_complete_prints_transformers_greedy_text_and_cuts_at_a_stop_string(tmp_path, capsys):
  """The plain path (`--prompt`, no chat) against HF generate on the same weights; then a stop
  string taken from that completion ends the text just before it."""
  import tiny_teacher
  import torch
  import transformers
  teacher = tiny_teacher.make(tmp_path / "t", seed=3)
  prompt, new = "The museum in Oslo", 12
  tok = transformers.AutoTokenizer.from_pretrained(teacher)
  ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
  hf = transformers.AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32).eval()
  with torch.no_grad():
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                      do_sample=False, eos_token_id=1, pad_token_id=0)[0, ids.shape[1]:]
  want = tok.decode(out, skip_special_tokens=True)
  assert cli.main(["complete", "--model", str(teacher), "--prompt", prompt, "--max_new_tokens",
                   str(new)]) == 0
  got = capsys.readouterr().out.rstrip("\n")
  assert got == want and len(want) >= 6, (got, want)
  stop = want[3:5]
  assert cli.main(["complete", "--model", str(teacher), "--prompt", prompt, "--max_new_tokens",
                   str(new), "--stop", stop]) == 0
  assert capsys.readouterr().out.rstrip("\n") == want[:want.index(stop)]
  # --chat: the prompt goes through the teacher's chat template, as transformers renders it.
  chat_ids = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                     add_generation_prompt=True, tokenize=True,
                                     return_dict=True)["input_ids"]
  chat_ids = torch.tensor([chat_ids])
  with torch.no_grad():
    out = hf.generate(chat_ids, attention_mask=torch.ones_like(chat_ids), max_new_tokens=new,
                      do_sample=False, eos_token_id=1, pad_token_id=0)[0, chat_ids.shape[1]:]
  assert cli.main(["complete", "--model", str(teacher), "--prompt", prompt, "--max_new_tokens",
                   str(new), "--chat"]) == 0
  assert capsys.readouterr().out.rstrip("\n") == tok.decode(out, skip_special_tokens=True)


@pytest.mark.slow
@pytest.mark.parametrize("what, args, keys", [
    ("decode", ["--batch_size", "2", "--repeats", "1"], ("agreement",)),
    ("train", ["--batch_size", "2", "--seq_len", "16", "--steps", "2"], ()),
    ("corpus", ["--mb", "0.3", "--processes", "1"], ("blingfire", "pysbd")),
])
def test_every_bench_runs_on_a_tiny_setup_and_reports_a_ratio(tmp_path, what, args, keys):
  """Smoke runs (not timings): each bench measures both sides and writes the shared shape."""
  import tiny_teacher
  model = [] if what == "corpus" else ["--model", str(tiny_teacher.make(tmp_path / "t"))]
  r = _brd("bench", what, *model, *args, "--out", str(tmp_path / "b.json"), timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.loads((tmp_path / "b.json").read_text())
  assert res["project"] > 0 and res["peer"] > 0
  assert res["ratio"] == pytest.approx(res["project"] / res["peer"])
  assert all(k in res for k in keys), sorted(res)
  assert "ratio (project / peer)" in r.stdout
