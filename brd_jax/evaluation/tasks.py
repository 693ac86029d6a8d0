"""The paper's six tasks from local files, with lm-evaluation-harness 0.4.13's zero-shot prompts.

A task yields Docs: a context, candidate continuations and the gold index. Every prompt is built
as lm-eval's shipped task builds it (sst2, sglue_rte, cb, boolq, xnli_en, paws_en): the same
document processing, context, choices and target delimiter; `tests/test_lm_eval_parity.py`
checks every document of the official files against lm-eval's own Task objects. Classification
tasks use "...\\nAnswer:" templates; XNLI and PAWS-X use XGLM's "premise, right? Yes/Also/No,
hypothesis" form where the whole sentence is the candidate (empty context).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import pathlib
import re

from brd_jax.errors import UserError

TASKS = ("xnli", "rte", "cb", "pawsx", "boolq", "sst2")


@dataclasses.dataclass
class Doc:
  context: str
  choices: list[str]       # continuations: the target delimiter, then the choice
  gold: int
  delimiter: str = " "     # lm-eval's target_delimiter (acc_norm counts the choice without it)

  def choice_chars(self) -> list[int]:
    """Characters of each choice without the delimiter: lm-eval's acc_norm length."""
    return [len(c[len(self.delimiter):]) if c.startswith(self.delimiter) else len(c)
            for c in self.choices]


def default_data_dir() -> pathlib.Path:
  env = os.environ.get("BRD_EVAL_DATA")
  if env:
    return pathlib.Path(env)
  return pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "eval"


def _jsonl(path):
  try:
    with open(path, encoding="utf-8") as f:
      return [json.loads(line) for line in f if line.strip()]
  except (ValueError, UnicodeDecodeError) as e:
    raise UserError(f"{path}: not valid JSONL ({e})") from None


def _tsv(path):
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _find(data_dir: pathlib.Path, task: str, names) -> pathlib.Path:
  for name in names:
    p = data_dir / task / name
    if p.exists():
      return p
  raise UserError(f"task {task}: none of {', '.join(names)} under {data_dir / task} "
                  "(point --data_dir at a folder with the official files)")


# Every label a file may hold, per task, and its answer index (names, numbers, numbers as text);
# anything else is an error, not a silent guess.
_NAMES = {"rte": ("entailment", "not_entailment"), "cb": ("entailment", "contradiction", "neutral"),
          "boolq": ("false", "true"), "sst2": ("negative", "positive"),
          "xnli": ("entailment", "neutral", "contradiction"),
          "pawsx": ("different", "paraphrase")}


def _gold(task: str, label) -> int:
  names = _NAMES[task]
  if isinstance(label, bool):
    label = int(label)
  if isinstance(label, float) and label.is_integer():
    label = int(label)
  if isinstance(label, str):
    text = label.strip()
    if text.lower() in names and (task == "boolq" or text == text.lower()):
      return names.index(text.lower())
    label = int(text) if text.isdigit() else label
  if isinstance(label, int) and 0 <= label < len(names):
    return label
  raise ValueError(f"unknown label {label!r} (expected one of {', '.join(names)} or 0-"
                   f"{len(names) - 1})")


def rte_docs(rows):
  return [Doc(f"{r['premise']}\nQuestion: {r['hypothesis']} True or False?\nAnswer:",
              [" True", " False"], _gold("rte", r["label"])) for r in rows]


def cb_docs(rows):
  return [Doc(f"{r['premise']}\nQuestion: {r['hypothesis']}. True, False, or Neither?\nAnswer:",
              [" True", " False", " Neither"], _gold("cb", r["label"])) for r in rows]


def boolq_docs(rows):
  return [Doc(f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:", [" no", " yes"],
              _gold("boolq", r["label"])) for r in rows]


def sst2_docs(rows):  # the sentence as GLUE has it, with its trailing space (as lm-eval keeps it)
  return [Doc(f"{r['sentence']}\nQuestion: Is this sentence positive or negative?\n"
              "Answer:", [" negative", " positive"], _gold("sst2", r["label"])) for r in rows]


def _xnli_doc(premise, hypothesis, gold):
  return Doc("", [f" {premise}, right? {w}, {hypothesis}" for w in ("Yes", "Also", "No")], gold)


def xnli_docs(rows):  # HF schema: premise, hypothesis, label (0 ent, 1 neu, 2 con)
  return [_xnli_doc(r["premise"], r["hypothesis"], _gold("xnli", r["label"])) for r in rows]


# lm-eval's PAWS-X detokenisation: these joins, then no space before ' . or ,
_DETOK = ((" n't", "n't"), (" )", ")"), ("( ", "("), ('" ', '"'), (' "', '"'))
_SPACE_BEFORE_PUNCT = re.compile(r" (['.,])")


def _detokenize(s: str) -> str:
  for a, b in _DETOK:
    s = s.replace(a, b)
  return _SPACE_BEFORE_PUNCT.sub(r"\1", s).strip()


def pawsx_docs(rows):
  """lm-eval's paws_en: rows with an empty sentence dropped, both sentences detokenised, the
  first without its final . , or ; and the second starting lower-case; no target delimiter."""
  docs = []
  for r in rows:
    if not r["sentence1"] or not r["sentence2"]:
      continue
    s1, s2 = _detokenize(r["sentence1"]), _detokenize(r["sentence2"])
    s1 = s1[:-1] if s1.endswith((".", ",", ";")) else s1
    s2 = s2[:1].lower() + s2[1:]
    docs.append(Doc("", [f"{s1}, right? No, {s2}", f"{s1}, right? Yes, {s2}"],
                    _gold("pawsx", r["label"]), delimiter=""))
  return docs


def rows_rte(d):
  return _jsonl(_find(d, "rte", ["val.jsonl"]))


def rows_cb(d):
  return _jsonl(_find(d, "cb", ["val.jsonl"]))


def rows_boolq(d):
  return _jsonl(_find(d, "boolq", ["val.jsonl"]))


def rows_sst2(d):
  rows = _tsv(_find(d, "sst2", ["dev.tsv"]))
  if rows and rows[0][-1] == "label":
    rows = rows[1:]
  return [{"sentence": r[0], "label": r[-1]} for r in rows if r]


def rows_xnli(d):
  path = _find(d, "xnli", ["xnli.test.tsv", "derived_format/test-en.hf.jsonl",
                           "derived_format/dev-en.xtreme.tsv"])
  if path.suffix == ".jsonl":
    return _jsonl(path)
  rows = _tsv(path)
  if rows and "gold_label" in rows[0]:  # official: language, gold_label, ..., sentence1, sentence2
    col = {n: i for i, n in enumerate(rows[0])}
    return [{"premise": r[col["sentence1"]], "hypothesis": r[col["sentence2"]],
             "label": r[col["gold_label"]]}
            for r in rows[1:] if r and r[col["language"]] == "en"]
  return [{"premise": r[0], "hypothesis": r[1], "label": r[2]}  # XTREME
          for r in rows if len(r) == 3]


def rows_pawsx(d):
  path = _find(d, "pawsx", ["test_2k.tsv", "dev_2k.tsv", "derived_format/dev-en.xtreme.tsv"])
  rows = _tsv(path)
  if rows and rows[0][:1] == ["id"]:  # official: id, sentence1, sentence2, label
    rows = [r[1:] for r in rows[1:]]
  return [{"sentence1": a, "sentence2": b, "label": c} for a, b, c in
          (r for r in rows if len(r) == 3)]


# task -> (HF datasets path, config, split), (TFDS name, split) and the row -> Doc builder.
DATASETS = {
    "rte": (("super_glue", "rte", "validation"), ("super_glue/rte", "validation"), rte_docs),
    "cb": (("super_glue", "cb", "validation"), ("super_glue/cb", "validation"), cb_docs),
    "boolq": (("super_glue", "boolq", "validation"), ("super_glue/boolq", "validation"),
              boolq_docs),
    "sst2": (("glue", "sst2", "validation"), ("glue/sst2", "validation"), sst2_docs),
    "xnli": (("xnli", "en", "test"), None, xnli_docs),
    "pawsx": (("paws-x", "en", "test"), None, pawsx_docs),
}


def _decode(v):
  if isinstance(v, bytes):
    return v.decode("utf-8")
  return v.item() if hasattr(v, "item") else v


def load_dataset_source(task: str, source: str) -> list[Doc]:
  """`hf` (HF hub names, online), `hf:DIR` (DIR/<task> saved with `save_to_disk`),
  `tfds` or `tfds:DATA_DIR` (prepared TFDS builders; GLUE / SuperGLUE tasks)."""
  return docs_of(task, dataset_rows(task, source), source)


def dataset_rows(task: str, source: str, split: str | None = None) -> list[dict]:
  hf_spec, tfds_spec, _ = DATASETS[task]
  if split:
    hf_spec = (*hf_spec[:2], split)
    tfds_spec = tfds_spec and (tfds_spec[0], split)
  kind, _, where = source.partition(":")
  if kind == "hf":
    import datasets  # pylint: disable=import-outside-toplevel
    try:
      if where:
        ds = datasets.load_from_disk(str(pathlib.Path(where) / task))
        if isinstance(ds, datasets.DatasetDict):
          ds = ds[hf_spec[2]]
      else:
        ds = datasets.load_dataset(hf_spec[0], hf_spec[1], split=hf_spec[2])
    except Exception as e:  # pylint: disable=broad-except  # offline, missing, wrong layout
      raise UserError(f"task {task}: HF dataset {'/'.join(hf_spec)} could not be loaded "
                      f"from {where or 'the hub'} ({type(e).__name__}: {str(e)[:120]})") from None
    return list(ds)
  if tfds_spec is None:
    raise UserError(f"task {task}: no TFDS builder; use the local files or --data_dir hf")
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  try:
    ds = tfds.load(tfds_spec[0], split=tfds_spec[1], data_dir=where or None, download=False)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"task {task}: TFDS {tfds_spec[0]} is not prepared in "
                    f"{where or 'the default data dir'} ({type(e).__name__})") from None
  return [{k: _decode(v) for k, v in ex.items()} for ex in tfds.as_numpy(ds)]


def _bigbench_json(spec: str) -> dict:
  """A BIG-bench task.json: a task name of the bigbench-tasks asset or a path to the file."""
  path = pathlib.Path(spec)
  if not (path.suffix == ".json" and path.exists()):
    from brd_jax import assets  # pylint: disable=import-outside-toplevel
    path = assets.fetch("bigbench-tasks") / spec / "task.json"
    if not path.exists():
      raise UserError(f"BIG-bench task {spec!r} not found in the bigbench-tasks asset")
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (ValueError, UnicodeDecodeError) as e:
    raise UserError(f"{path}: invalid JSON ({e})") from None


def load_bigbench(spec: str) -> list[Doc]:
  """A BIG-bench JSON task with target_scores, formatted with BIG-bench's own conventions.

  spec: a task name from the `bigbench-tasks` asset (e.g. `navigate`, `conceptual_combinations/
  contradictions`) or a path to a task.json. Prompt = task_prefix + "\nQ: " + input [+ the
  choices, each after "\n  choice: ", in BIG-bench's seed-42 order] + "\nA: ".
  """
  import numpy as np  # pylint: disable=import-outside-toplevel
  data = _bigbench_json(spec)
  prefix = str(data.get("task_prefix", ""))
  q, a = data.get("example_input_prefix", "\nQ: "), data.get("example_output_prefix", "\nA: ")
  cp = data.get("choice_prefix", "\n  choice: ")
  append = data.get("append_choices_to_input", True)
  docs = []
  for ex in data.get("examples", []):
    scores = ex.get("target_scores")
    if not scores:
      continue
    text = ex["input"]
    if append:
      order = np.random.RandomState(seed=42).permutation(sorted(scores))
      text = text + cp + cp.join(order)
    best = max(scores.values())
    choices = list(scores)
    docs.append(Doc(prefix + q + text + a, choices,
                    next(i for i, c in enumerate(choices) if scores[c] == best), delimiter=""))
  if not docs:
    raise UserError(f"BIG-bench task {spec}: no examples with target_scores (only multiple-choice "
                    "tasks)")
  return docs


ROWS = {"rte": rows_rte, "cb": rows_cb, "boolq": rows_boolq, "sst2": rows_sst2,
        "xnli": rows_xnli, "pawsx": rows_pawsx}
DOCS = {"rte": rte_docs, "cb": cb_docs, "boolq": boolq_docs, "sst2": sst2_docs,
        "xnli": xnli_docs, "pawsx": pawsx_docs}
# The unlabeled inputs of each task (what `brd corpus --from_task` reads and decontamination
# matches); labels are never among them.
INPUT_FIELDS = {"rte": ("premise", "hypothesis"), "cb": ("premise", "hypothesis"),
                "boolq": ("passage", "question"), "sst2": ("sentence",),
                "xnli": ("premise", "hypothesis"), "pawsx": ("sentence1", "sentence2")}


def docs_of(task: str, rows: list, where) -> list[Doc]:
  """DOCS[task] row by row, so a bad example is named: `where, example N: what is wrong`."""
  out = []
  for i, r in enumerate(rows):
    try:
      if not isinstance(r, dict):
        raise ValueError(f"not an object but {type(r).__name__}")
      out.extend(DOCS[task]([r]))
    except KeyError as e:
      raise UserError(f"task {task}: {where}, example {i + 1}: no field {e}") from None
    except (ValueError, TypeError, AttributeError, IndexError) as e:
      raise UserError(f"task {task}: {where}, example {i + 1}: {e}") from None
  return out


LOADERS = {t: (lambda d, t=t: docs_of(t, ROWS[t](d), pathlib.Path(d) / t)) for t in ROWS}


def is_known(task: str) -> bool:
  return task in LOADERS or (task.startswith("bigbench:") and len(task) > len("bigbench:"))


def load(task: str, data_dir=None, limit: int | None = None) -> list[Doc]:
  if task.startswith("bigbench:"):
    docs = load_bigbench(task[len("bigbench:"):])
    return docs[:limit] if limit else docs
  if task not in LOADERS:
    raise UserError(f"unknown task {task!r}; known: {', '.join(TASKS)}, bigbench:NAME")
  if data_dir and str(data_dir).split(":", 1)[0] in ("hf", "tfds"):
    docs = load_dataset_source(task, str(data_dir))
    return docs[:limit] if limit else docs
  d = pathlib.Path(data_dir) if data_dir else default_data_dir()
  try:
    docs = LOADERS[task](d)
  except (KeyError, IndexError, ValueError) as e:
    raise UserError(f"task {task}: unexpected file layout under {d / task} ({e!r})") from None
  if not docs:
    raise UserError(f"task {task}: no examples found under {d / task}")
  return docs[:limit] if limit else docs


def inputs(task: str, data_dir=None, split: str | None = None) -> list[list[str]]:
  """The unlabeled inputs of every example (e.g. [premise, hypothesis]); labels are not read.

  `split` chooses a split of an hf / tfds source; local files hold one split each."""
  if task.startswith("bigbench:"):
    data = _bigbench_json(task[len("bigbench:"):])
    return [[ex["input"]] for ex in data.get("examples", []) if isinstance(ex.get("input"), str)]
  if task not in ROWS:
    raise UserError(f"unknown task {task!r}; known: {', '.join(TASKS)}, bigbench:NAME")
  if data_dir and str(data_dir).split(":", 1)[0] in ("hf", "tfds"):
    rows = dataset_rows(task, str(data_dir), split)
  else:
    if split:
      raise UserError(f"task {task}: local files hold one split; choose a split with "
                      "--data_dir hf:DIR or tfds")
    d = pathlib.Path(data_dir) if data_dir else default_data_dir()
    try:
      rows = ROWS[task](d)
    except (KeyError, IndexError, ValueError) as e:
      raise UserError(f"task {task}: unexpected file layout under {d / task} ({e!r})") from None
  return [[str(r[f]) for f in INPUT_FIELDS[task]] for r in rows]


def input_texts(task_names, data_dir=None) -> dict[str, list[str]]:
  """task -> each example's inputs joined (what decontamination matches), read as `brd eval`
  reads them."""
  out = {}
  for t in task_names:
    if not is_known(t):
      raise UserError(f"corpus.decontaminate: unknown task {t!r} (supported: "
                      f"{', '.join(TASKS)}, bigbench:NAME)")
    out[t] = [" ".join(fields) for fields in inputs(t, data_dir)]
  return out


def fewshot(docs: list[Doc], k: int, seed: int = 1234) -> list[Doc]:
  """Prefixes each doc with k solved demonstrations from the same split, never the doc itself.

  The local files hold one split per task, so demonstrations come from it with the doc left out
  (what lm-eval does when the few-shot split is the evaluated one). Demonstrations are joined by
  a blank line; the sample for doc i depends only on (seed, i).
  """
  import random  # pylint: disable=import-outside-toplevel
  if k <= 0:
    return docs
  if len(docs) <= k:
    raise UserError(f"--num_fewshot {k} needs more than {k} documents (have {len(docs)})")
  out = []
  for i, d in enumerate(docs):
    rng = random.Random(seed * 1_000_003 + i)
    picks = [j for j in rng.sample(range(len(docs)), k + 1) if j != i][:k]
    demos = [docs[j].context + docs[j].choices[docs[j].gold] for j in picks]
    demos = [x.lstrip() if not docs[j].context else x for x, j in zip(demos, picks)]
    out.append(Doc("\n\n".join(demos) + "\n\n" + d.context if d.context else
                   "\n\n".join(demos) + "\n\n",
                   [c.lstrip() for c in d.choices] if not d.context else d.choices, d.gold,
                   d.delimiter if d.context else ""))
  return out
