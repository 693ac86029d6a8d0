"""results.json, a paper-style results.md, and a PNG bar chart of accuracy per task and rule."""
from __future__ import annotations

import json
import pathlib

from brd_jax.evaluation.harness import RULES
from brd_jax.io_utils import atomic_write_text

NAMES = {"xnli": "XNLI", "rte": "RTE", "cb": "CB", "pawsx": "PAWS-X", "boolq": "BoolQ",
         "sst2": "SST-2"}


def write(out_dir, model_name: str, results: dict, meta: dict) -> None:
  out = pathlib.Path(out_dir)
  atomic_write_text(out / "results.json", json.dumps(
      {"model": model_name, **meta, "tasks": results}, indent=2) + "\n")
  tasks = list(results)
  head = "| rule | " + " | ".join(NAMES.get(t, t) for t in tasks) + " | Avg |"
  lines = [f"# Zero-shot accuracy: {model_name}", "", head,
           "|" + "---|" * (len(tasks) + 2)]
  for rule in RULES:
    vals = [100 * results[t][rule] for t in tasks]
    cells = [f"{v:.1f} ± {100 * results[t][rule + '_stderr']:.1f}" for v, t in zip(vals, tasks)]
    lines.append(f"| {rule} | " + " | ".join(cells) + f" | {sum(vals) / len(vals):.1f} |")
  lines += ["", "n: " + ", ".join(f"{NAMES.get(t, t)} {results[t]['n']}" for t in tasks),
            "seconds: " + ", ".join(f"{NAMES.get(t, t)} {results[t]['seconds']}" for t in tasks),
            "", "acc_mean_token is the paper's rule (mean per-token log-prob); acc and acc_norm "
            "are lm-evaluation-harness's."]
  atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
  _plot(out / "results.png", model_name, results)


def _plot(path, model_name, results):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  tasks = list(results)
  x = np.arange(len(tasks))
  fig, ax = plt.subplots(figsize=(1.6 * len(tasks) + 2, 3.6))
  for i, rule in enumerate(RULES):
    ax.bar(x + (i - 1) * 0.27, [100 * results[t][rule] for t in tasks], 0.27, label=rule,
           yerr=[100 * results[t][rule + "_stderr"] for t in tasks], capsize=2)
  ax.set_xticks(x, [NAMES.get(t, t) for t in tasks])
  ax.set_ylabel("accuracy (%)")
  ax.set_title(f"zero-shot: {model_name}")
  ax.legend(fontsize=8)
  fig.tight_layout()
  tmp = path.with_suffix(".tmp.png")
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  tmp.replace(path)
