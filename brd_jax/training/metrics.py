"""Training metrics: FLOPs and MFU, JSONL + TensorBoard writers, the loss-curve PNG."""
from __future__ import annotations

import json
import pathlib

import jax

from brd_jax.io_utils import ObjectAppender, as_path, is_url, save_figure
from brd_jax.models.config import ModelConfig

# Dense bf16 peak FLOP/s per device (vendor figures), matched against jax's device_kind.
PEAK_FLOPS = (
    ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5", 197e12), ("TPU v4", 275e12),
    ("TPU v3", 123e12), ("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L4", 121e12),
)


def peak_flops(device=None, override: float = 0.0) -> float:
  """Per-device peak; 0 when unknown (CPU unless `train.peak_flops_per_device` is set)."""
  if override:
    return float(override)
  kind = (device or jax.devices()[0]).device_kind
  for name, flops in PEAK_FLOPS:
    if name.lower() in kind.lower():
      return flops
  return 0.0


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  """Training FLOPs per token: 6 x matmul params + causal attention (PaLM appendix B)."""
  L, D = cfg.n_layers, cfg.d_model
  per_layer = D * (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim + cfg.n_heads * cfg.head_dim * D
  per_layer += D * cfg.d_ff * (3 if cfg.gated_mlp else 2)
  matmul = L * per_layer + D * cfg.vocab_size  # the LM head; the embedding lookup is free
  attention = 12 * L * cfg.n_heads * cfg.head_dim * seq_len / 2
  return 6 * matmul + attention


class Writer:
  """metrics.jsonl (appended; a resumed run continues it) and TensorBoard event files."""

  def __init__(self, workdir, tensorboard: bool = True):
    self.path = as_path(workdir) / "metrics.jsonl"
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._f = None
    if jax.process_index() == 0:
      self._f = (ObjectAppender(self.path) if is_url(self.path)
                 else open(self.path, "a", encoding="utf-8"))
    self._tb = None
    if tensorboard and self._f is not None:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(str(as_path(workdir) / "tensorboard"))  # gs:// through its own client

  def write(self, step: int, values: dict) -> None:
    if self._f is None:
      return
    self._f.write(json.dumps({"step": step, **values}) + "\n")
    self._f.flush()
    if self._tb is not None:
      for k, v in values.items():
        if isinstance(v, (int, float)):
          self._tb.add_scalar(f"train/{k}", v, step)

  def event(self, step: int, values: dict) -> None:
    """A run's start or resume (what was restored): one record that `read` leaves out."""
    if self._f is not None:
      self._f.write(json.dumps({"step": step, **values}) + "\n")
      self._f.flush()

  def close(self) -> None:
    if self._f is not None:
      self._f.close()
    if self._tb is not None:
      self._tb.close()


def records(workdir) -> list[dict]:
  """Every record in the order written: steps, and the start / resume events between them. Each
  carries `attempt`: how many starts and resumes came before it, counting from 0."""
  path = as_path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  out, attempt = [], -1
  for line in path.read_text().splitlines():
    if not line.strip():
      continue
    try:
      rec = json.loads(line)
    except ValueError:  # the torn last line of a killed run
      continue
    if "event" in rec:
      attempt += 1
    out.append({**rec, "attempt": max(attempt, 0)})
  return out


def read(workdir) -> list[dict]:
  """The metrics of a run; for a step logged twice (redone after a crash) the last record wins."""
  by_step = {r["step"]: r for r in records(workdir) if "event" not in r}
  return [by_step[s] for s in sorted(by_step)]


def events(workdir) -> list[dict]:
  """The start and resume records of a run, oldest first."""
  return [r for r in records(workdir) if "event" in r]


def plot(workdir, out: str | pathlib.Path | None = None) -> pathlib.Path:
  """Loss, learning rate and throughput against step -> WORKDIR/loss.png."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from brd_jax.errors import UserError
  recs = read(workdir)
  if not recs:
    raise UserError(f"{workdir}: no metrics.jsonl records to plot")
  steps = [r["step"] for r in recs]
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  for ax, key, title in zip(axes, ("loss", "learning_rate", "tokens_per_s"),
                            ("train loss (nats/token)", "learning rate", "tokens/s")):
    ys = [r.get(key) for r in recs]
    ax.plot([s for s, y in zip(steps, ys) if y is not None], [y for y in ys if y is not None])
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  fig.tight_layout()
  out = as_path(out) if out else as_path(workdir) / "loss.png"
  save_figure(fig, out)
  return out
