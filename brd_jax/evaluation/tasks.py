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
from collections.abc import Callable

from brd_jax.errors import UserError, optional_import
from brd_jax.io_utils import iter_jsonl


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


def _jsonl(path) -> list:
  return [value for _, value in iter_jsonl(path)]


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


# Readers of the official files that are not HF-schema JSONL: a found file -> HF-schema rows.
def _sst2_rows(path):
  rows = _tsv(path)
  if rows and rows[0][-1] == "label":
    rows = rows[1:]
  return [{"sentence": r[0], "label": r[-1]} for r in rows if r]


def _xnli_rows(path):
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


def _pawsx_rows(path):
  rows = _tsv(path)
  if rows and rows[0][:1] == ["id"]:  # official: id, sentence1, sentence2, label
    rows = [r[1:] for r in rows[1:]]
  return [{"sentence1": a, "sentence2": b, "label": c} for a, b, c in
          (r for r in rows if len(r) == 3)]


# Prompts: a row -> (context, choices), or None for a row lm-eval drops.
def _answer(template: str, *choices: str):
  """An "...\\nAnswer:" prompt: the row's fields put in `template`, each choice after a space."""
  return lambda r: (template.format_map(r), [f" {c}" for c in choices])


def _xnli(r):  # the whole sentence is the candidate
  premise, hypothesis = r["premise"], r["hypothesis"]
  return "", [f" {premise}, right? {w}, {hypothesis}" for w in ("Yes", "Also", "No")]


# lm-eval's PAWS-X detokenisation: these joins, then no space before ' . or ,
_DETOK = ((" n't", "n't"), (" )", ")"), ("( ", "("), ('" ', '"'), (' "', '"'))
_SPACE_BEFORE_PUNCT = re.compile(r" (['.,])")


def _detokenize(s: str) -> str:
  for a, b in _DETOK:
    s = s.replace(a, b)
  return _SPACE_BEFORE_PUNCT.sub(r"\1", s).strip()


def _pawsx(r):
  """lm-eval's paws_en: rows with an empty sentence dropped, both sentences detokenised, the
  first without its final . , or ; and the second starting lower-case."""
  if not r["sentence1"] or not r["sentence2"]:
    return None
  s1, s2 = _detokenize(r["sentence1"]), _detokenize(r["sentence2"])
  s1 = s1[:-1] if s1.endswith((".", ",", ";")) else s1
  s2 = s2[:1].lower() + s2[1:]
  return "", [f"{s1}, right? No, {s2}", f"{s1}, right? Yes, {s2}"]


@dataclasses.dataclass(frozen=True)
class Task:
  """One evaluation task: where its examples are, and how an example becomes a Doc."""
  name: str
  labels: tuple[str, ...]        # every label name a file may hold, in answer-index order
  input_fields: tuple[str, ...]  # the unlabeled inputs (`brd corpus --from_task`, decontamination)
  files: tuple[str, ...]         # the official files under DATA_DIR/<name>: the first found is read
  read: Callable                 # that file -> rows of the HF schema
  prompt: Callable               # a row -> (context, choices), or None: the row is dropped
  hf: tuple[str, str, str]       # HF datasets path, config, split
  tfds: str | None = None        # the TFDS builder (splits named as HF's); None: there is none
  delimiter: str = " "           # lm-eval's target_delimiter
  any_case: bool = False         # label names match in any case (BoolQ's True / False)

  def rows(self, data_dir: pathlib.Path) -> list:
    return self.read(_find(data_dir, self.name, self.files))

  def gold(self, label) -> int:
    """A label's answer index: a name, a number or a number as text; anything else is an error,
    not a silent guess."""
    names = self.labels
    if isinstance(label, bool):
      label = int(label)
    if isinstance(label, float) and label.is_integer():
      label = int(label)
    if isinstance(label, str):
      text = label.strip()
      if text.lower() in names and (self.any_case or text == text.lower()):
        return names.index(text.lower())
      label = int(text) if text.isdigit() else label
    if isinstance(label, int) and 0 <= label < len(names):
      return label
    raise ValueError(f"unknown label {label!r} (expected one of {', '.join(names)} or 0-"
                     f"{len(names) - 1})")

  def doc(self, row: dict) -> Doc | None:
    made = self.prompt(row)  # before the label: a missing input field is named first
    return None if made is None else Doc(*made, self.gold(row["label"]), self.delimiter)


_NLI = ("premise", "hypothesis")
REGISTRY: dict[str, Task] = {t.name: t for t in (
    Task("xnli", ("entailment", "neutral", "contradiction"), _NLI,
         ("xnli.test.tsv", "derived_format/test-en.hf.jsonl", "derived_format/dev-en.xtreme.tsv"),
         _xnli_rows, _xnli, ("xnli", "en", "test")),
    Task("rte", ("entailment", "not_entailment"), _NLI, ("val.jsonl",), _jsonl,
         _answer("{premise}\nQuestion: {hypothesis} True or False?\nAnswer:", "True", "False"),
         ("super_glue", "rte", "validation"), tfds="super_glue/rte"),
    Task("cb", ("entailment", "contradiction", "neutral"), _NLI, ("val.jsonl",), _jsonl,
         _answer("{premise}\nQuestion: {hypothesis}. True, False, or Neither?\nAnswer:",
                 "True", "False", "Neither"),
         ("super_glue", "cb", "validation"), tfds="super_glue/cb"),
    Task("pawsx", ("different", "paraphrase"), ("sentence1", "sentence2"),
         ("test_2k.tsv", "dev_2k.tsv", "derived_format/dev-en.xtreme.tsv"), _pawsx_rows, _pawsx,
         ("paws-x", "en", "test"), delimiter=""),
    Task("boolq", ("false", "true"), ("passage", "question"), ("val.jsonl",), _jsonl,
         _answer("{passage}\nQuestion: {question}?\nAnswer:", "no", "yes"),
         ("super_glue", "boolq", "validation"), tfds="super_glue/boolq", any_case=True),
    # the sentence as GLUE has it, with its trailing space (as lm-eval keeps it)
    Task("sst2", ("negative", "positive"), ("sentence",), ("dev.tsv",), _sst2_rows,
         _answer("{sentence}\nQuestion: Is this sentence positive or negative?\nAnswer:",
                 "negative", "positive"),
         ("glue", "sst2", "validation"), tfds="glue/sst2"),
)}
TASKS = tuple(REGISTRY)  # the names, in the order error texts list them
ROWS = {name: t.rows for name, t in REGISTRY.items()}  # name -> data_dir -> the local files' rows
_KNOWN = f"{', '.join(TASKS)}, bigbench:NAME"
BIGBENCH = "bigbench:"


def _decode(v):
  if isinstance(v, bytes):
    return v.decode("utf-8")
  return v.item() if hasattr(v, "item") else v


def dataset_rows(task: str, source: str, split: str | None = None) -> list[dict]:
  """A task's rows from `hf` (HF hub names, online), `hf:DIR` (DIR/<task> saved with
  `save_to_disk`), `tfds` or `tfds:DATA_DIR` (prepared TFDS builders; GLUE / SuperGLUE tasks)."""
  t = REGISTRY[task]
  hf_spec = (*t.hf[:2], split or t.hf[2])
  kind, _, where = source.partition(":")
  if kind == "hf":
    datasets = optional_import("datasets", "hf", f"eval rows of {task} from {source}")
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
  if t.tfds is None:
    raise UserError(f"task {task}: no TFDS builder; use the local files or --data_dir hf")
  import tensorflow_datasets as tfds
  try:
    ds = tfds.load(t.tfds, split=hf_spec[2], data_dir=where or None, download=False)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"task {task}: TFDS {t.tfds} is not prepared in "
                    f"{where or 'the default data dir'} ({type(e).__name__})") from None
  return [{k: _decode(v) for k, v in ex.items()} for ex in tfds.as_numpy(ds)]


def _bigbench_json(spec: str) -> dict:
  """A BIG-bench task.json: a task name of the bigbench-tasks asset or a path to the file."""
  path = pathlib.Path(spec)
  if not (path.suffix == ".json" and path.exists()):
    from brd_jax import assets
    path = assets.fetch("bigbench-tasks") / spec / "task.json"
    if not path.exists():
      raise UserError(f"BIG-bench task {spec!r} not found in the bigbench-tasks asset")
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (ValueError, UnicodeDecodeError) as e:
    raise UserError(f"{path}: invalid JSON ({e})") from None


def _bigbench_examples(data: dict) -> list[dict]:
  return [ex for ex in data.get("examples", []) if ex.get("target_scores")]


def _bigbench_prompts(data: dict) -> list[tuple[str, list[str]]]:
  """(context, choices) of each multiple-choice example; the choices are target_scores' keys,
  and their scores (the labels) are not read."""
  import numpy as np
  prefix = str(data.get("task_prefix", ""))
  q, a = data.get("example_input_prefix", "\nQ: "), data.get("example_output_prefix", "\nA: ")
  cp = data.get("choice_prefix", "\n  choice: ")
  append = data.get("append_choices_to_input", True)
  out = []
  for ex in _bigbench_examples(data):
    choices, text = list(ex["target_scores"]), ex["input"]
    if append:
      order = np.random.RandomState(seed=42).permutation(sorted(choices))
      text = text + cp + cp.join(order)
    out.append((prefix + q + text + a, choices))
  return out


def bigbench_docs(spec: str, data: dict) -> list[Doc]:
  """A BIG-bench JSON task with target_scores, formatted with BIG-bench's own conventions.

  spec: a task name from the `bigbench-tasks` asset (e.g. `navigate`, `conceptual_combinations/
  contradictions`) or a path to a task.json; data: that task.json. Prompt = task_prefix + "\nQ: "
  + input [+ the choices, each after "\n  choice: ", in BIG-bench's seed-42 order] + "\nA: ".
  """
  docs = []
  for ex, (context, choices) in zip(_bigbench_examples(data), _bigbench_prompts(data)):
    scores = ex["target_scores"]
    best = max(scores.values())
    docs.append(Doc(context, choices, next(i for i, c in enumerate(choices) if scores[c] == best),
                    delimiter=""))
  if not docs:
    raise UserError(f"BIG-bench task {spec}: no examples with target_scores (only multiple-choice "
                    "tasks)")
  return docs


def docs_of(task: str, rows: list, where) -> list[Doc]:
  """REGISTRY[task].doc row by row, so a bad example is named: `where, example N: what is
  wrong`."""
  t, out = REGISTRY[task], []
  for i, r in enumerate(rows):
    try:
      if not isinstance(r, dict):
        raise ValueError(f"not an object but {type(r).__name__}")
      doc = t.doc(r)
    except KeyError as e:
      raise UserError(f"task {task}: {where}, example {i + 1}: no field {e}") from None
    except (ValueError, TypeError, AttributeError, IndexError) as e:
      raise UserError(f"task {task}: {where}, example {i + 1}: {e}") from None
    if doc is not None:
      out.append(doc)
  return out


def is_known(task: str) -> bool:
  return task in REGISTRY or (task.startswith(BIGBENCH) and len(task) > len(BIGBENCH))


def _remote(data_dir) -> bool:
  return bool(data_dir) and str(data_dir).split(":", 1)[0] in ("hf", "tfds")


def _source(task: str, data_dir, split: str | None = None) -> tuple:
  """The one dispatch of `load` and `inputs`: (the Task, or None for BIG-bench; the rows, or the
  task.json; where they were read) from BIG-bench, an hf / tfds source or the local files."""
  if task.startswith(BIGBENCH):
    spec = task[len(BIGBENCH):]
    return None, _bigbench_json(spec), spec
  if task not in REGISTRY:
    raise UserError(f"unknown task {task!r}; known: {_KNOWN}")
  if _remote(data_dir):
    return REGISTRY[task], dataset_rows(task, str(data_dir), split), str(data_dir)
  if split:
    raise UserError(f"task {task}: local files hold one split; choose a split with "
                    "--data_dir hf:DIR or tfds")
  d = pathlib.Path(data_dir) if data_dir else default_data_dir()
  try:
    return REGISTRY[task], REGISTRY[task].rows(d), d / task
  except (KeyError, IndexError, ValueError) as e:
    raise UserError(f"task {task}: unexpected file layout under {d / task} ({e!r})") from None


def load(task: str, data_dir=None, limit: int | None = None) -> list[Doc]:
  t, rows, where = _source(task, data_dir)
  docs = bigbench_docs(where, rows) if t is None else docs_of(task, rows, where)
  if not docs and not _remote(data_dir):  # only local files must hold examples
    raise UserError(f"task {task}: no examples found under {where}")
  return docs[:limit] if limit else docs


def inputs(task: str, data_dir=None, split: str | None = None) -> list[list[str]]:
  """The unlabeled inputs of every example (e.g. [premise, hypothesis]); labels are not read.

  `split` chooses a split of an hf / tfds source; local files hold one split each."""
  t, rows, _ = _source(task, data_dir, split)
  if t is None:
    return [[ex["input"]] for ex in rows.get("examples", []) if isinstance(ex.get("input"), str)]
  return [[str(r[f]) for f in t.input_fields] for r in rows]


def prompts(task: str, data_dir=None) -> list[Doc]:
  """Every example's prompt and candidates as `load` builds them, with gold = -1: the labels are
  not read (task distillation asks the teacher instead)."""
  t, rows, where = _source(task, data_dir)
  if t is None:
    return [Doc(c, ch, -1, delimiter="") for c, ch in _bigbench_prompts(rows)]
  out = []
  for i, r in enumerate(rows):
    if not isinstance(r, dict):
      raise UserError(f"task {task}: {where}, example {i + 1}: not an object but "
                      f"{type(r).__name__}")
    try:
      made = t.prompt(r)
    except KeyError as e:
      raise UserError(f"task {task}: {where}, example {i + 1}: no field {e}") from None
    if made is not None:
      out.append(Doc(*made, -1, t.delimiter))
  return out


def input_texts(task_names, data_dir=None) -> dict[str, list[str]]:
  """task -> each example's inputs joined (what decontamination matches), read as `brd eval`
  reads them."""
  out = {}
  for t in task_names:
    if not is_known(t):
      raise UserError(f"corpus.decontaminate: unknown task {t!r} (supported: {_KNOWN})")
    out[t] = [" ".join(fields) for fields in inputs(t, data_dir)]
  return out


def fewshot(docs: list[Doc], k: int, seed: int = 1234) -> list[Doc]:
  """Prefixes each doc with k solved demonstrations from the same split, never the doc itself.

  The local files hold one split per task, so demonstrations come from it with the doc left out
  (what lm-eval does when the few-shot split is the evaluated one). Demonstrations are joined by
  a blank line; the sample for doc i depends only on (seed, i).
  """
  import random
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
