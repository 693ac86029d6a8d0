"""The `train` and `student` gin configurables: every training setting in one place."""
from __future__ import annotations

import dataclasses

import gin

from brd_jax.errors import UserError


@gin.configurable("train")
@dataclasses.dataclass(frozen=True)
class TrainConfig:
  steps: int = 1000
  batch_size: int = 8               # global sequences per optimizer step
  grad_accum: int = 1               # microbatches per step (batch_size must divide)
  learning_rate: float = 3e-4
  warmup_steps: int = 100
  decay: str = "cosine"             # cosine | linear | constant (after warmup)
  end_lr_ratio: float = 0.1         # final lr = learning_rate * end_lr_ratio
  weight_decay: float = 0.1         # never applied to norms and biases
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  clip_norm: float = 1.0            # 0 disables clipping
  z_loss: float = 0.0
  kd_weight: float = 0.0            # forward KL to the teacher's top-k, when batches carry it
  seed: int = 0
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  async_checkpoints: bool = True
  # Orbax's OCDBT layout (one database per checkpoint); False: one zarr array per parameter, for
  # stores without conditional writes (e.g. GCS emulators)
  checkpoint_ocdbt: bool = True
  log_every: int = 10
  log_example_ids: bool = False     # per-step content ids of the examples (resume checks)
  peak_flops_per_device: float = 0.0  # overrides the device table (set it for CPU MFU)
  tensorboard: bool = True

  def __post_init__(self):
    def bad(name, why):
      raise UserError(f"train.{name}={getattr(self, name)!r}: {why}")
    for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints",
                 "log_every"):
      if getattr(self, name) <= 0:
        bad(name, "must be positive")
    if self.batch_size % self.grad_accum:
      bad("grad_accum", f"must divide train.batch_size={self.batch_size}")
    if self.decay not in ("cosine", "linear", "constant"):
      bad("decay", "must be cosine, linear or constant")
    if self.warmup_steps < 0 or self.learning_rate <= 0:
      bad("learning_rate", "learning_rate must be > 0 and warmup_steps >= 0")


@gin.configurable("student")
@dataclasses.dataclass(frozen=True)
class StudentConfig:
  """Where the student's weights come from.

  init: 'scratch' (the gin `model.*` config) or a --model spec (HF dir, .gguf, asset:NAME,
  training workdir). keep_every: derive a shallower student by keeping layers 0, k, 2k, ...
  tokenizer: for scratch students, 'bytes' or a --model spec whose tokenizer to use.
  """
  init: str = "scratch"
  tokenizer: str | None = None
  keep_every: int = 1
  dtype: str | None = None          # compute dtype override (bfloat16 on accelerators)
  remat: str | None = None
  scan_layers: bool | None = None

  def overrides(self) -> dict:
    return {k: v for k, v in (("dtype", self.dtype), ("remat", self.remat),
                              ("scan_layers", self.scan_layers)) if v is not None}
