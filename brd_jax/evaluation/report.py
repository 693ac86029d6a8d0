"""results.json, a paper-style results.md, and a PNG bar chart of accuracy per task and rule."""
from __future__ import annotations

import json
import pathlib

from brd_jax.evaluation.harness import RULES
from brd_jax.io_utils import as_path, atomic_write_text, save_figure

NAMES = {"xnli": "XNLI", "rte": "RTE", "cb": "CB", "pawsx": "PAWS-X", "boolq": "BoolQ",
         "sst2": "SST-2"}


def write(out_dir, model_name: str, results: dict, meta: dict) -> None:
  out = as_path(out_dir)
  atomic_write_text(out / "results.json", json.dumps(
      {"model": model_name, **meta, "tasks": results}, indent=2) + "\n")
  tasks = list(results)
  head = "| rule | " + " | ".join(NAMES.get(t, t) for t in tasks) + " | Avg |"
  shots = meta.get("num_fewshot") or 0
  title = f"{shots}-shot" if shots else "Zero-shot"
  lines = [f"# {title} accuracy: {model_name}", "", head,
           "|" + "---|" * (len(tasks) + 2)]
  for rule in RULES:
    vals = [100 * results[t][rule] for t in tasks]
    cells = [f"{v:.1f} ± {100 * results[t][rule + '_stderr']:.1f}" for v, t in zip(vals, tasks)]
    lines.append(f"| {rule} | " + " | ".join(cells) + f" | {sum(vals) / len(vals):.1f} |")
  if all("ref_ce" in results[t] for t in tasks):
    lines += ["", "| teacher-student (nats/token) | " + " | ".join(NAMES.get(t, t) for t in tasks)
              + " |", "|" + "---|" * (len(tasks) + 1)]
    for key, label in (("ref_ce", "cross-entropy CE(p_T, p_S)"), ("ref_kl", "KL(p_T || p_S)"),
                       ("student_nll", "student NLL")):
      lines.append(f"| {label} | " + " | ".join(f"{results[t][key]:.3f}" for t in tasks) + " |")
  lines += ["", "n: " + ", ".join(f"{NAMES.get(t, t)} {results[t]['n']}" for t in tasks),
            "seconds: " + ", ".join(f"{NAMES.get(t, t)} {results[t]['seconds']}" for t in tasks),
            *(["CE / KL on the first documents only: " + ", ".join(
                f"{NAMES.get(t, t)} {results[t]['divergence_docs']}" for t in tasks)]
              if any(results[t].get("divergence_docs", results[t]["n"]) < results[t]["n"]
                     for t in tasks) else []),
            "", "acc_mean_token is the paper's rule (mean per-token log-prob); acc and acc_norm "
            "are lm-evaluation-harness's."]
  atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
  _plot(out / "results.png", model_name, results)


def _plot(path, model_name, results):
  tasks = list(results)
  series = [(rule, [100 * results[t][rule] for t in tasks],
             [100 * results[t][rule + "_stderr"] for t in tasks]) for rule in RULES]
  _grouped_bars(path, [NAMES.get(t, t) for t in tasks], series, "accuracy (%)",
                f"{model_name}")


def _grouped_bars(path, labels, series, ylabel, title=None):
  """One group of bars per label, one bar per (name, values, errors or None) series."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  x = np.arange(len(labels))
  w = 0.8 / max(len(series), 1)
  fig, ax = plt.subplots(figsize=(1.5 * len(labels) + 2.5, 3.7))
  for i, (name, values, errors) in enumerate(series):
    ax.bar(x + (i - (len(series) - 1) / 2) * w, values, w, label=name, yerr=errors, capsize=2)
  ax.set_xticks(x, labels)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  ax.legend(fontsize=8)
  fig.tight_layout()
  save_figure(fig, path)


def compare(run_dirs, rule: str = "acc_mean_token", out: str | pathlib.Path | None = None) -> str:
  """Several `brd eval` runs side by side (one row per run, an average column) as markdown.

  With `out`, writes the markdown there and a grouped bar chart beside it (same stem, .png).
  """
  from brd_jax.errors import UserError
  if rule not in RULES:
    raise UserError(f"--rule {rule!r}: one of {', '.join(RULES)}")
  runs = []
  for d in run_dirs:
    path = as_path(d) / "results.json"
    try:
      runs.append((str(d), json.loads(path.read_text(encoding="utf-8"))))
    except FileNotFoundError:
      raise UserError(f"{d}: no results.json (is it a `brd eval --out` directory?)") from None
    except ValueError as e:
      raise UserError(f"{path}: invalid JSON ({e})") from None
  tasks = []
  for _, r in runs:
    tasks += [t for t in r["tasks"] if t not in tasks]
  head = "| run | model | " + " | ".join(NAMES.get(t, t) for t in tasks) + " | Avg |"
  lines = [f"# {rule} (%)", "", head, "|" + "---|" * (len(tasks) + 3)]
  for d, r in runs:
    vals = [100 * r["tasks"][t][rule] if t in r["tasks"] else None for t in tasks]
    have = [v for v in vals if v is not None]
    avg = f"{sum(have) / len(have):.1f}" + ("" if len(have) == len(tasks) else "*")
    cells = [f"{v:.1f}" if v is not None else "–" for v in vals]
    lines.append(f"| {d} | {r.get('model', '?')} | " + " | ".join(cells) + f" | {avg} |")
  lines += ["", "* average over the tasks that run has."]
  text = "\n".join(lines) + "\n"
  if out:
    out = as_path(out)
    atomic_write_text(out, text)
    _plot_compare(out.with_suffix(".png"), runs, tasks, rule)
  return text


def _plot_compare(path, runs, tasks, rule):
  series = [(as_path(d).name or d,
             [100 * r["tasks"][t][rule] if t in r["tasks"] else 0 for t in tasks], None)
            for d, r in runs]
  _grouped_bars(path, [NAMES.get(t, t) for t in tasks], series, f"{rule} (%)")
