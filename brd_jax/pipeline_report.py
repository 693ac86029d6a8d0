"""The pipeline's report: the models side by side, BRD vs the corpus-only control with a paired
bootstrap interval, teacher-student divergence, loss curves and the goodput of every stage."""
from __future__ import annotations

import json
import pathlib

import numpy as np

from brd_jax.behaviors.ledger import read_manifest as read_ledger_manifest
from brd_jax.evaluation.harness import RULES, samples_path
from brd_jax.evaluation.report import NAMES, _grouped_bars
from brd_jax.io_utils import as_path, atomic_write_text, save_figure


def _load(workdir: pathlib.Path, models) -> dict:
  out = {}
  for m in models:
    p = workdir / "eval" / m / "results.json"
    if p.exists():
      out[m] = json.loads(p.read_text())["tasks"]
  return out


def _hits(path: pathlib.Path) -> np.ndarray:
  """Per-document correctness under the paper's rule (mean per-token log-prob)."""
  out = []
  with path.open(encoding="utf-8") as f:
    for line in f:
      s = json.loads(line)
      ll, n = np.asarray(s["loglik"]), np.asarray(s["n_tokens"], np.float64)
      out.append(int(np.argmax(ll / n)) == s["gold"])
  return np.asarray(out, np.float64)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0):
  """Mean of a - b and its 95% interval, resampling documents (the same ones on both sides)."""
  rng = np.random.default_rng(seed)
  d = a - b
  idx = rng.integers(0, len(d), (n, len(d)))
  means = d[idx].mean(axis=1)
  return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _table(results, tasks, rule) -> list[str]:
  head = "| model | " + " | ".join(NAMES.get(t, t) for t in tasks) + " | Avg |"
  lines = [head, "|" + "---|" * (len(tasks) + 2)]
  for m, r in results.items():
    vals = [100 * r[t][rule] for t in tasks if t in r]
    cells = [f"{100 * r[t][rule]:.1f}" if t in r else "–" for t in tasks]
    avg = f"{sum(vals) / len(vals):.1f}" if vals else "–"
    lines.append(f"| {m} | " + " | ".join(cells) + f" | {avg} |")
  return lines


def _train_stats(workdir: pathlib.Path, name: str) -> dict:
  from brd_jax.training import metrics
  # one record per step (a step redone after a resume counts once), without start/resume events
  recs = metrics.read(workdir / f"train_{name}")
  if not recs:
    return {}
  steady = [r for r in recs if not r.get("includes_compile")]
  mean = lambda k: float(np.mean([r[k] for r in steady if k in r])) if any(
      k in r for r in steady) else None
  return {"records": recs, "tokens_per_s": mean("tokens_per_s"), "mfu": mean("mfu"),
          "final_loss": recs[-1]["loss"] if recs else None}


def _plot_loss(path, curves: dict) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4))
  for name, recs in curves.items():
    ax.plot([r["step"] for r in recs], [r["loss"] for r in recs], label=name)
  ax.set_xlabel("step")
  ax.set_ylabel("training loss (nats/token)")
  ax.set_title("student training: BRD mixture vs corpus only")
  ax.legend()
  fig.tight_layout()
  save_figure(fig, path)


def write(workdir, models) -> tuple[pathlib.Path, str]:
  """Writes WORKDIR/report.md (and its plots); returns its path and its headline: the title and
  the table by the paper's rule."""
  workdir = as_path(workdir)
  results = _load(workdir, models)
  tasks = []
  for r in results.values():
    tasks += [t for t in r if t not in tasks]
  lines = ["# BRD pipeline report", "",
           f"Work dir `{workdir}`. Accuracy (%) zero-shot; candidates ranked by mean per-token "
           "log-prob (the paper's rule); lm-evaluation-harness's `acc` (sum) and `acc_norm` (per "
           "byte) follow.", ""]
  for rule in RULES:
    lines += [f"## {rule}", ""] + _table(results, tasks, rule) + [""]
  if results:
    _grouped_bars(workdir / "report_accuracy.png", [NAMES.get(t, t) for t in tasks],
                  [(m, [100 * r.get(t, {}).get("acc_mean_token", 0) for t in tasks], None)
                   for m, r in results.items()], "acc_mean_token (%)",
                  "zero-shot accuracy per model")
    lines += ["![accuracy](report_accuracy.png)", ""]
  a, b = workdir / "eval" / "student_brd", workdir / "eval" / "student_corpus_only"
  if a.exists() and b.exists():
    lines += ["## BRD minus corpus-only (acc_mean_token, points)", "",
              "Paired bootstrap over documents (2000 resamples): an interval containing 0 means "
              "the difference is within noise.", "", "| task | n | BRD - corpus-only | 95% interval |",
              "|---|---|---|---|"]
    for t in tasks:
      fa, fb = samples_path(a, t), samples_path(b, t)
      if fa.exists() and fb.exists():
        ha, hb = _hits(fa), _hits(fb)
        d, lo, hi = paired_bootstrap(ha, hb)
        lines.append(f"| {NAMES.get(t, t)} | {len(ha)} | {100 * d:+.1f} | "
                     f"[{100 * lo:+.1f}, {100 * hi:+.1f}] |")
    lines.append("")
  div = {m: r for m, r in results.items() if all("ref_ce" in r[t] for t in r)}
  if div:
    lines += ["## Teacher-student divergence (nats/token over context + gold answer, mean over "
              "tasks)", "", "| model | CE(p_T, p_S) | KL(p_T || p_S) |", "|---|---|---|"]
    for m, r in div.items():
      lines.append(f"| {m} | {np.mean([r[t]['ref_ce'] for t in r]):.3f} | "
                   f"{np.mean([r[t]['ref_kl'] for t in r]):.3f} |")
    lines.append("")
  curves, train_what = {}, {}
  for name in ("brd", "corpus_only"):
    st = _train_stats(workdir, name)
    if st:
      curves[name] = st["records"]
      mfu = f"{100 * st['mfu']:.2f}%" if st["mfu"] is not None else "–"
      train_what[f"train_{name}"] = (f"student {st['tokens_per_s']:.0f} tokens/s, MFU {mfu}, "
                                     f"final loss {st['final_loss']:.3f}")
  if curves:
    _plot_loss(workdir / "report_loss.png", curves)
    lines += ["## Training", "", "![loss](report_loss.png)", ""]
  lines += ["## Goodput per stage", "", "| stage | seconds | what it did |", "|---|---|---|"]
  ledger = read_ledger_manifest(workdir / "ledger") or {}
  order = ["corpus", "generate", "train_brd", "train_corpus_only", "eval_teacher",
           "eval_student_init", "eval_student_brd", "eval_student_corpus_only"]
  for p in sorted((workdir / "stages").glob("*.json"),
                  key=lambda p: (order.index(p.stem) if p.stem in order else 99, p.stem)):
    rec = json.loads(p.read_text())
    name, what = rec["stage"], ""
    s = rec.get("summary") or {}
    if name == "corpus":
      what = f"{s.get('paragraphs')} paragraphs"
    elif name == "generate" and ledger:
      keep = ", ".join(f"{b} keep {100 * v['keep_rate']:.0f}%" for b, v in
                       ledger.get("behaviors", {}).items() if v.get("keep_rate") is not None)
      what = (f"{ledger.get('done')} of {ledger.get('units')} units; "
              f"{ledger.get('last_run', {}).get('tokens_per_s')} teacher tokens/s; {keep}")
    elif name.startswith("train_"):
      what = train_what.get(name, "")
    elif name.startswith("eval_"):
      n_req = sum(v.get("n", 0) for v in s.values()) if isinstance(s, dict) else 0
      what = f"{n_req} documents, {n_req / max(rec['seconds'], 1e-9):.1f} documents/s"
    lines.append(f"| {name} | {rec['seconds']:.0f} | {what} |")
  out = workdir / "report.md"
  atomic_write_text(out, "\n".join(lines) + "\n")
  return out, "\n".join(lines[:lines.index(f"## {RULES[1]}")]).rstrip()
