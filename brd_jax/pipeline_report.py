"""The pipeline's report: the models side by side, every arm minus the reference arm (per task and
on the average, paired bootstrap intervals pooling seeds), teacher-student divergence, loss
curves and the goodput of every stage."""
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


def joint_bootstrap(diffs: list[np.ndarray], n: int = 2000, seed: int = 0, weights=None):
  """The mean over tasks of each task's mean difference, and its 95% interval: every resample
  draws documents within each task (the tasks' draws in turn from one generator). With
  `weights` (per task, per document: its tokens), a task's mean is sum(d) / sum(w), the
  token-weighted mean of per-document sums."""
  rng = np.random.default_rng(seed)
  weights = weights or [np.ones(len(d)) for d in diffs]
  per_task = []
  for d, w in zip(diffs, weights):
    idx = rng.integers(0, len(d), (n, len(d)))
    per_task.append(d[idx].sum(axis=1) / w[idx].sum(axis=1))
  means = np.mean(per_task, axis=0)
  return (float(np.mean([d.sum() / w.sum() for d, w in zip(diffs, weights)])),
          float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def _by_arm(arms: dict) -> dict[str, list[str]]:
  """arm -> its runs (one per seed), from run name -> arm."""
  out: dict[str, list[str]] = {}
  for run, arm in arms.items():
    out.setdefault(arm, []).append(run)
  return out


def _arm_hits(workdir: pathlib.Path, runs: list[str], task: str) -> np.ndarray | None:
  """Per-document hits of an arm, averaged over its seeds' runs (None until all are scored)."""
  files = [samples_path(workdir / "eval" / f"student_{r}", task) for r in runs]
  if not files or not all(f.exists() for f in files):
    return None
  return np.mean([_hits(f) for f in files], axis=0)


def _arm_differences(workdir, tasks, arms: dict, reference: str) -> dict:
  """arm -> {"seeds", "tasks": {task: (n, diff, lo, hi)}, "avg": (n, diff, lo, hi) or None,
  "acc": the arm's mean accuracy over tasks}, every arm but the reference, in points."""
  by_arm = _by_arm(arms)
  ref = {t: _arm_hits(workdir, by_arm[reference], t) for t in tasks}
  out = {}
  for arm, runs in by_arm.items():
    if arm == reference:
      continue
    per_task, diffs, accs = {}, [], []
    for t in tasks:
      a = _arm_hits(workdir, runs, t)
      if a is None or ref[t] is None:
        continue
      per_task[t] = (len(a), *(100 * v for v in paired_bootstrap(a, ref[t])))
      diffs.append(a - ref[t])
      accs.append(100 * a.mean())
    avg = None
    if len(diffs) > 1:
      avg = (sum(map(len, diffs)), *(100 * v for v in joint_bootstrap(diffs)))
    out[arm] = {"seeds": len(runs), "tasks": per_task, "avg": avg,
                "acc": float(np.mean(accs)) if accs else None}
  return out


def _arms_section(diffs: dict, reference: str) -> list[str]:
  """Each arm minus the reference arm, per task and on the average over tasks."""
  if not diffs:
    return []
  lines = [f"## Arms minus {reference} (acc_mean_token, points)", "",
           "Paired bootstrap over documents (2000 resamples): an arm's seeds are averaged per "
           "document first, and the average over tasks resamples every task's documents at "
           "once. An interval containing 0 means the difference is within noise.", "",
           f"| arm | task | seeds | n | arm - {reference} | 95% interval |",
           "|---|---|---|---|---|---|"]
  for arm, st in diffs.items():
    rows = [(NAMES.get(t, t), v) for t, v in st["tasks"].items()]
    if st["avg"]:
      rows.append(("Avg", st["avg"]))
    for name, (n, d, lo, hi) in rows:
      lines.append(f"| {arm} | {name} | {st['seeds']} | {n} | {d:+.1f} | "
                   f"[{lo:+.1f}, {hi:+.1f}] |")
  return lines + [""]


def _paper_section(diffs: dict, reference: str, ref_acc: float | None, paper: dict,
                   source: str) -> list[str]:
  """Our arms' averages and differences beside the paper's figures for the same arms."""
  if not paper or not diffs:
    return []
  lines = ["## Beside the paper (average accuracy over tasks, %)", "",
           f"The paper's figures: {source or 'as configured in pipeline.paper'}. Its tasks, "
           "teacher, student and scale differ from this run's: compare the signs and the "
           "intervals, not the levels.", "",
           f"| arm | ours | ours: arm - {reference} | 95% interval | paper | "
           f"paper: arm - {reference} |", "|---|---|---|---|---|---|"]
  fmt = lambda v: "–" if v is None else f"{v:.1f}"
  p_ref = paper.get(reference)
  lines.append(f"| {reference} | {fmt(ref_acc)} | | | {fmt(p_ref)} | |")
  for arm, st in diffs.items():
    n, d, lo, hi = st["avg"] or (None,) * 4
    p = paper.get(arm)
    p_diff = f"{p - p_ref:+.1f}" if p is not None and p_ref is not None else "–"
    ours = "–" if d is None else f"{d:+.1f}"
    ci = "" if d is None else f"[{lo:+.1f}, {hi:+.1f}]"
    lines.append(f"| {arm} | {fmt(st['acc'])} | {ours} | {ci} | {fmt(p)} | {p_diff} |")
  return lines + [""]


def _plot_arms(path, diffs: dict, reference: str, paper: dict | None) -> None:
  """Every arm minus the reference: per task (dots), the average over tasks with its interval
  (bar), and the paper's difference where it has one (cross)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  names = list(diffs)
  fig, ax = plt.subplots(figsize=(7, 1.2 + 0.6 * len(names)))
  p_ref = (paper or {}).get(reference)
  for y, arm in enumerate(names):
    st = diffs[arm]
    ax.scatter([v[1] for v in st["tasks"].values()], [y] * len(st["tasks"]), s=14,
               color="0.6", label="per task" if y == 0 else None, zorder=2)
    if st["avg"]:
      _, d, lo, hi = st["avg"]
      ax.errorbar([d], [y], xerr=[[d - lo], [hi - d]], fmt="o", color="C0", capsize=4,
                  label="average over tasks, 95% interval" if y == 0 else None, zorder=3)
    p = (paper or {}).get(arm)
    if p is not None and p_ref is not None:
      ax.scatter([p - p_ref], [y], marker="x", s=50, color="C3",
                 label="the paper" if y == 0 else None, zorder=4)
  ax.axvline(0, color="k", lw=0.8)
  ax.set_yticks(range(len(names)), names)
  ax.invert_yaxis()
  ax.set_xlabel(f"accuracy minus {reference} (points, acc_mean_token)")
  ax.set_title(f"arms minus {reference}")
  ax.legend(fontsize=8, loc="best")
  fig.tight_layout()
  save_figure(fig, path)


def _data_section(workdir: pathlib.Path, arms: dict) -> list[str]:
  """What each arm trained on: its unique text (as trained) and how many times it saw it."""
  rows = []
  for arm, runs in _by_arm(arms).items():
    sums = []
    for r in runs:
      try:
        sums.append(json.loads((workdir / "stages" / f"train_{r}.json").read_text())["summary"])
      except (OSError, ValueError, KeyError):
        pass
    if not sums or sums[0].get("unique_tokens") is None:
      continue
    s0, seen = sums[0], [s["tokens_seen"] for s in sums if s.get("tokens_seen") is not None]
    examples = ", ".join(f"{t.removeprefix('brd_')} {n}" for t, n in s0["examples"].items())
    mean_seen = np.mean(seen) if seen else None
    epochs = f"{mean_seen / s0['unique_tokens']:.1f}" if mean_seen is not None else "–"
    cut = s0["tokens_cut"] / max(s0["tokens_cut"] + s0["unique_tokens"], 1)
    rows.append(f"| {arm} | {s0['mixture']} ({s0['level']}) | {examples} | "
                f"{s0['unique_tokens']} | {100 * cut:.0f}% | "
                f"{'–' if mean_seen is None else f'{mean_seen:.0f}'} | {epochs} |")
  if not rows:
    return []
  return ["## Training data per arm", "",
          "Unique tokens: the mixture's examples as trained (EOS added, each cut to data.seq_len; "
          "the cut share is lost to training). Tokens seen: per run (mean over seeds). Epochs: "
          "tokens seen / unique tokens; an arm far above 1 repeats its text, one near 1 sees it "
          "about once.", "",
          "| arm | mixture (level) | examples per task | unique tokens | cut by seq_len | "
          "tokens seen | epochs over unique text |", "|---|---|---|---|---|---|---|"] + rows + [""]


def _arm_divergence(workdir: pathlib.Path, runs: list[str], task: str):
  """Per-document sums (ce, kl, tokens) of an arm to the teacher, averaged over its seeds (None
  until every run has them)."""
  files = [samples_path(workdir / "eval" / f"student_{r}", task) for r in runs]
  if not all(f.exists() for f in files):
    return None
  per_run = []
  for f in files:  # with eval.divergence_limit only the first documents carry a reference
    refs = [d["ref"] for d in map(json.loads, f.open(encoding="utf-8")) if d.get("ref")]
    if not refs:
      return None
    per_run.append(np.array([[r[0], r[1], r[3]] for r in refs]))
  if len({len(x) for x in per_run}) != 1:
    return None
  return np.mean(per_run, axis=0)


def _divergence_section(workdir, tasks, arms: dict, reference: str) -> list[str]:
  """Each arm's CE and KL to the teacher minus the reference arm's (nats/token), per task and on
  the average over tasks, with paired bootstrap intervals over documents."""
  by_arm = _by_arm(arms)
  if len(by_arm) < 2:
    return []
  ref = {t: _arm_divergence(workdir, by_arm[reference], t) for t in tasks}
  if all(v is None for v in ref.values()):
    return []
  lines = [f"## Divergence to the teacher: arms minus {reference} (nats/token)", "",
           "Over context + gold answer; negative: closer to the teacher. Token-weighted per task; "
           "paired bootstrap over documents (2000 resamples), seeds averaged per document.", "",
           f"| arm | task | seeds | n | CE - {reference} | 95% interval | KL - {reference} | "
           "95% interval |", "|---|---|---|---|---|---|---|---|"]
  for arm, runs in by_arm.items():
    if arm == reference:
      continue
    got = {t: (_arm_divergence(workdir, runs, t), ref[t]) for t in tasks}
    got = {t: (a, r) for t, (a, r) in got.items() if a is not None and r is not None}
    rows = [(NAMES.get(t, t), [a], [r]) for t, (a, r) in got.items()]
    if len(got) > 1:
      rows.append(("Avg", [a for a, _ in got.values()], [r for _, r in got.values()]))
    for name, a, r in rows:
      cells = []
      for col in (0, 1):
        d, lo, hi = joint_bootstrap([x[:, col] - y[:, col] for x, y in zip(a, r)],
                                    weights=[y[:, 2] for y in r])
        cells.append(f"{d:+.3f} | [{lo:+.3f}, {hi:+.3f}]")
      lines.append(f"| {arm} | {name} | {len(runs)} | {sum(len(x) for x in a)} | "
                   + " | ".join(cells) + " |")
  return lines + [""]


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
  ax.set_title("student training, one curve a run")
  ax.legend()
  fig.tight_layout()
  save_figure(fig, path)


def write(workdir, models, arms: dict, reference: str, paper: dict | None = None,
          paper_source: str = "") -> tuple[pathlib.Path, str]:
  """Writes WORKDIR/report.md (and its plots); returns its path and its headline: the title and
  the table by the paper's rule. `arms`: student run name -> its arm (seeds are runs of one arm);
  `paper`: arm -> the paper's average accuracy for it (%), shown beside ours.
  """
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
  diffs = _arm_differences(workdir, tasks, arms, reference) if len(_by_arm(arms)) > 1 else {}
  lines += _arms_section(diffs, reference)
  if any(st["avg"] or st["tasks"] for st in diffs.values()):
    _plot_arms(workdir / "report_arms.png", diffs, reference, paper)
    lines += ["![arms](report_arms.png)", ""]
  ref_hits = [_arm_hits(workdir, _by_arm(arms).get(reference, []), t) for t in tasks]
  ref_acc = [100 * h.mean() for h in ref_hits if h is not None]
  lines += _paper_section(diffs, reference, float(np.mean(ref_acc)) if ref_acc else None,
                          paper or {}, paper_source)
  lines += _data_section(workdir, arms)
  div = {m: r for m, r in results.items() if all("ref_ce" in r[t] for t in r)}
  if div:
    lines += ["## Teacher-student divergence (nats/token over context + gold answer, mean over "
              "tasks)", "", "| model | CE(p_T, p_S) | KL(p_T || p_S) |", "|---|---|---|"]
    for m, r in div.items():
      lines.append(f"| {m} | {np.mean([r[t]['ref_ce'] for t in r]):.3f} | "
                   f"{np.mean([r[t]['ref_kl'] for t in r]):.3f} |")
    lines.append("")
    lines += _divergence_section(workdir, tasks, arms, reference)
  curves, train_what = {}, {}
  for name in arms:
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
  order = ["corpus", "generate", "task_distill", *(f"train_{r}" for r in arms), "eval_teacher",
           "eval_student_init", *(f"eval_student_{r}" for r in arms)]
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
