"""`brd bench train`: the project's jitted train step vs a plain PyTorch `transformers` loop.

Same architecture and weights (the model exported to an HF dir and reloaded by `transformers`),
same random token batch, fp32 or bf16 compute with fp32 master weights (torch under
`torch.autocast`), AdamW (lr 1e-4, weight decay 0.1) with global-norm clipping at 1.0 on both
sides; the project under the remat policy asked for (torch keeps every activation). Each side
runs one warm-up step (compilation for the project), then `steps` timed steps; tokens/s uses the
median step. The first-step losses must agree (the same math).
"""
from __future__ import annotations

import pathlib
import statistics
import tempfile
import time

import numpy as np

from brd_jax.benchmarks import report


def run(model_spec: str = "asset:smollm2-135m-instruct", batch: int | None = None,
        seq_len: int = 128, steps: int = 5, dtype: str = "float32", remat: str = "none",
        json_path: str | None = None) -> dict:
  import jax
  import torch
  import transformers
  from brd_jax import sharding
  from brd_jax.checkpoints import hf, resolve
  from brd_jax.models import build
  from brd_jax.training import optim
  from brd_jax.training import step as step_lib
  from brd_jax.training.config import TrainConfig

  batch = batch or 8
  loaded = resolve.load(model_spec, overrides={"dtype": dtype, "remat": remat})
  cfg = loaded.cfg
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, cfg.vocab_size, (batch, seq_len + 1)).astype(np.int32)

  with tempfile.TemporaryDirectory() as tmp:
    hf.export_dir(loaded.model, pathlib.Path(tmp))
    peer_model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp, dtype=torch.float32, attn_implementation="sdpa")
  peer_model.train()

  # --- project ---------------------------------------------------------------------------------
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  tcfg = TrainConfig(steps=1000, batch_size=batch, learning_rate=1e-4, warmup_steps=0,
                     decay="constant", weight_decay=0.1, clip_norm=1.0)
  params, bind = build.functional(loaded.model)
  tx = optim.optimizer(tcfg)
  shardings = step_lib.state_shardings(cfg, tx, params, mesh)
  state = step_lib.init_state(tx, params, shardings, mesh)
  step_fn = step_lib.make_train_step(bind, tx, tcfg, mesh, shardings)
  ones = np.ones((batch, seq_len), np.int32)
  jbatch = {"decoder_input_tokens": tokens[:, :-1], "decoder_target_tokens": tokens[:, 1:],
            "decoder_loss_weights": ones, "decoder_segment_ids": ones,
            "decoder_positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32),
                                                 (batch, seq_len)).copy()}
  jbatch = {k: jax.device_put(v) for k, v in jbatch.items()}

  def ours():
    nonlocal state
    state, m = step_fn(state, jbatch)
    return float(m["loss"])

  # --- peer --------------------------------------------------------------------------------------
  decay = [p for n, p in peer_model.named_parameters() if "norm" not in n and "bias" not in n]
  rest = [p for n, p in peer_model.named_parameters() if "norm" in n or "bias" in n]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                           {"params": rest, "weight_decay": 0.0}], lr=1e-4, betas=(0.9, 0.95),
                          eps=1e-8)
  ids = torch.from_numpy(tokens.astype(np.int64))

  def peer():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
      loss = peer_model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(peer_model.parameters(), 1.0)
    opt.step()
    return float(loss.detach())

  timings, first_loss = {}, {}
  for name, fn in (("project", ours), ("peer", peer)):
    first_loss[name] = fn()  # warm-up; both sides start from the same weights and batch
    times = []
    for _ in range(steps):
      t = time.perf_counter()
      fn()
      times.append(time.perf_counter() - t)
    timings[name] = statistics.median(times)
    print(f"{name}: first loss {first_loss[name]:.5f}, steps {[f'{x:.2f}s' for x in times]}")

  n_tok = batch * seq_len
  tps = {k: n_tok / v for k, v in timings.items()}
  diff = abs(first_loss["project"] - first_loss["peer"])
  return report(
      "train_tokens_per_s", tps["project"], tps["peer"],
      {"first_loss_abs_diff": diff, "batch": batch, "seq_len": seq_len, "dtype": dtype,
       "remat": remat,
       "torch_threads": torch.get_num_threads()},
      [("model", f"{model_spec} ({cfg.num_params() / 1e6:.0f}M params)"),
       ("batch x seq_len", f"{batch} x {seq_len}"), ("brd_jax remat", remat),
       ("brd_jax tokens/s", f"{tps['project']:.1f}"),
       ("transformers tokens/s", f"{tps['peer']:.1f}"),
       ("first-step loss |diff|", f"{diff:.2e}")], json_path,
      model_cfg=cfg, kernel_rows=batch * seq_len, dtype=dtype)
