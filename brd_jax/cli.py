"""`brd`: a table of contents. Each sub-command binds its flags as gin bindings and calls its stage's
entry point; the stages and their settings live in their packages. Heavy libraries (jax, TF, torch)
are imported inside the commands, so `brd --help` and a bad flag answer at once."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from brd_jax import config
from brd_jax.cli_args import Parser, names
from brd_jax.errors import Preempted, UserError
from brd_jax.io_utils import as_path


def _parse(args, configurable: str = "", flags=(), extra=()) -> None:
  """Parses gin: the files, then --gin, then `extra` bindings, then the flags given (they win)."""
  given = [f"{configurable}.{f} = {getattr(args, f)!r}" for f in flags
           if getattr(args, f, None) is not None]
  config.parse(args.gin_file, [*args.gin, *extra, *given])


def _mesh(host: bool = False):
  """Starts multi-host JAX when configured; the global mesh, or this host's."""
  from brd_jax import sharding
  sharding.initialize()
  return sharding.host_mesh() if host else sharding.make_mesh()


def cmd_corpus(args):
  from brd_jax.corpus import stage
  from brd_jax.corpus.config import CorpusConfig
  from brd_jax.evaluation import task_corpus
  _parse(args, "corpus", ("format", "num_processes", "process_index"),
         ([f"corpus.inputs = {tuple(args.input)!r}"] if args.input else []) +
         ([f"corpus.from_tasks = {tuple(args.from_task)!r}"] if args.from_task else []))
  cfg, eval_texts = task_corpus.prepare(CorpusConfig(), args.workdir, args.data_dir)
  summary = stage.run(cfg, args.workdir, eval_texts, progress=not args.no_progress)
  config.write_operative_config(args.workdir)
  print(json.dumps(summary))


def cmd_generate(args):
  from brd_jax.behaviors import generate
  from brd_jax.behaviors.config import GenerateConfig
  _parse(args, "generate", ("teacher", "topk", "limit", "num_processes", "process_index",
                            "batch_size"),
         ([f"generate.behaviors = {names(args.behaviors)!r}"] if args.behaviors else []))
  cfg = GenerateConfig()
  summary = generate.run(cfg, args.paragraphs, args.ledger, _mesh(host=True),
                         progress=not args.no_progress)
  config.write_operative_config(args.ledger)
  print(json.dumps(summary))


def cmd_export(args):
  from brd_jax.data import export
  from brd_jax.data.config import DataConfig
  _parse(args, "data", ("paragraphs_dir", "ledger_dir", "task_distill_dir", "level", "sep"))
  info = export.run(DataConfig(), args.out, progress=not args.no_progress)
  print(json.dumps({k: info[k] for k in ("fingerprint", "records", "counts")}
                   | {"out": str(args.out)}))


def cmd_pipeline(args):
  from brd_jax import pipeline
  _parse(args)
  out = pipeline.run(args.workdir, _mesh(), args.data_dir, progress=not args.no_progress)
  config.write_operative_config(args.workdir)
  print(f"{out['headline']}\n\nreport: {out['report']}")


def cmd_convert(args):
  from brd_jax.checkpoints import convert
  _parse(args)
  loaded = convert.run(args.model, args.to, _mesh(), args.dtype, args.overwrite,
                       config.operative_config())
  print(f"wrote {args.to} ({loaded.cfg.family}, {loaded.cfg.num_params() / 1e6:.1f}M params)")


def cmd_assets(args):
  from brd_jax import assets
  if args.action == "list":
    for name, a in sorted(assets.ASSETS.items()):
      state = "fetched" if assets.is_fetched(name) else "not fetched"
      print(f"{name:24s} {state:12s} {a.description}")
  elif not args.name:
    raise UserError(f"brd assets {args.action} needs an asset NAME")
  else:
    if args.archive and args.action != "fetch":
      raise UserError("--archive goes with brd assets fetch")
    print(assets.fetch(args.name, archive=args.archive) if args.action == "fetch"
          else assets.path(args.name))


def cmd_complete(args):
  from brd_jax.inference import complete
  if (args.prompt is None) == (args.prompts is None):
    raise UserError("give exactly one of --prompt TEXT or --prompts IN.jsonl")
  if args.prompts and not args.out:
    raise UserError("--prompts needs --out OUT.jsonl")
  _parse(args, "complete", ("max_new_tokens", "temperature", "top_k", "top_p", "seed",
                            "batch_size"),
         ([f"complete.stop = {tuple(args.stop)!r}"] if args.stop else []) +
         (["complete.chat = True"] if args.chat else []))
  cfg = complete.CompleteConfig()
  if args.prompt is not None:
    print(complete.run(cfg, args.model, [args.prompt], _mesh(), progress=False)[0])
  else:
    n = complete.run_file(cfg, args.model, args.prompts, args.out, _mesh())
    print(f"wrote {n} completions to {args.out}")


def cmd_loglik(args):
  from brd_jax.inference import loglik
  _parse(args)
  n = loglik.run(args.model, args.requests, args.out, _mesh(), args.token_budget)
  print(f"wrote {n} log-likelihoods to {args.out}")


def cmd_eval(args):
  from brd_jax.evaluation import run as eval_run
  from brd_jax.evaluation.config import EvalConfig
  _parse(args, "eval", ("data_dir", "limit", "num_fewshot", "reference_model", "divergence_limit",
                        "token_budget"),
         ([f"eval.tasks = {names(args.tasks)!r}"] if args.tasks is not None else []) +
         (["eval.log_samples = True"] if args.log_samples else []))
  cfg = EvalConfig()
  eval_run.check(cfg)  # missing data fails before JAX starts or a model loads
  eval_run.run(cfg, args.model, args.workdir, _mesh(), progress=not args.no_progress)
  config.write_operative_config(args.workdir)
  print((as_path(args.workdir) / "results.md").read_text())


def cmd_plan(args):
  from brd_jax.io_utils import atomic_write_text
  from brd_jax.planning import plan
  _parse(args)
  topo, plans = plan.run(args.topology, args.aot)
  print(plan.render(topo, plans), flush=True)
  if args.out:
    atomic_write_text(args.out, json.dumps(plan.summary(topo, plans), indent=1))
  plan.check_fits(topo, plans)


def cmd_report(args):
  from brd_jax.evaluation import report
  print(report.compare(args.runs, args.rule, args.out), end="")


def cmd_train(args):
  from brd_jax.training import loop
  _parse(args)
  if args.beam is not None and not args.prepare_only:
    raise UserError("--beam builds the prepared examples: give it with --prepare_only")
  if args.prepare_only:
    print(json.dumps(loop.prepare_only(args.workdir, progress=not args.no_progress,
                                       beam=args.beam)))
    return
  summary = loop.run(args.workdir, _mesh(), progress=not args.no_progress)
  config.write_operative_config(args.workdir)
  print(json.dumps(summary))


def cmd_plot(args):
  from brd_jax.training import metrics
  print(metrics.plot(args.workdir, args.out))


def cmd_bench(args):
  from brd_jax.benchmarks import run
  _parse(args)
  _mesh()
  run.run(args.what, vars(args))


COMMANDS = {  # name -> (what it does, its command); the flags: cli_args.FLAGS[name]
    "corpus": ("raw text -> WORKDIR/paragraphs/ (filtered, split, deduplicated, decontaminated); "
               "re-run to resume", cmd_corpus),
    "generate": ("the teacher reads every sentence (NER / QRA / SKD) into an exactly-once ledger; "
                 "re-run to resume", cmd_generate),
    "export": ("paragraphs/ + ledger/ -> the BRD dataset as Parquet (readings and training "
               "texts) with a dataset card", cmd_export),
    "pipeline": ("corpus -> generate -> train (BRD and corpus-only) -> eval -> report; re-run to "
                 "resume", cmd_pipeline),
    "convert": ("convert a model (HF dir / GGUF / asset) to an HF directory", cmd_convert),
    "assets": ("demo models and data from the package registry", cmd_assets),
    "complete": ("generate completions for prompts", cmd_complete),
    "eval": ("zero-shot evaluation on the paper's tasks", cmd_eval),
    "loglik": ("log-likelihood of continuations (lm-eval requests)", cmd_loglik),
    "bench": ("benchmarks against a peer measured in the same run", cmd_bench),
    "report": ("several `brd eval` runs side by side with an average", cmd_report),
    "train": ("train the student on the seqio behaviour mixture", cmd_train),
    "plot": ("loss / lr / throughput curves of a training workdir", cmd_plot),
    "plan": ("per-device memory, FLOPs and days of each stage on a topology; --aot proves memory "
             "with the real steps' compiles", cmd_plan),
}


def build_parser() -> Parser:
  from brd_jax import cli_args
  parser = Parser(prog="brd", description="Basic Reading Distillation in JAX/Flax.")
  parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
  sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
  for name, (help_text, func) in COMMANDS.items():
    p = sub.add_parser(name, help=help_text)
    cli_args.FLAGS[name](p)
    p.set_defaults(func=func)
    # `brd eval -v ...` as well as `brd -v eval ...`
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
