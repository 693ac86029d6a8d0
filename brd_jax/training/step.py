"""The jitted, sharded train step: explicit in/out NamedShardings, donated state.

State is a plain pytree {"step", "params", "opt"}; params are the nested dict of
`models.build.functional`, so optax and Orbax see ordinary arrays with the model's shardings.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from brd_jax import sharding
from brd_jax.models import build
from brd_jax.training import losses, optim
from brd_jax.training.config import TrainConfig


def normalize_batch(batch: dict) -> dict:
  """int32 decoder features (the teacher's top-k as they come); unpacked batches get segment
  ids / positions (0 = padding)."""
  out = {k: np.asarray(v, np.int32) if k.startswith("decoder_") else np.asarray(v)
         for k, v in batch.items()}
  if "decoder_segment_ids" not in out:
    real = out["decoder_target_tokens"] != 0
    out["decoder_segment_ids"] = real.astype(np.int32)
    out["decoder_positions"] = np.maximum(np.cumsum(real, axis=1) - 1, 0).astype(np.int32)
  return out


def abstract_state(tx, params) -> dict:
  """{"step", "params", "opt"} as ShapeDtypeStructs (params may be arrays or abstract)."""
  abs_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  return {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": abs_params,
          "opt": jax.eval_shape(tx.init, abs_params)}


def state_shardings(cfg, tx, params, mesh):
  """Shardings of {"step", "params", "opt"}: optimizer moments follow their parameters."""
  replicated = NamedSharding(mesh, P())
  param_shardings = build.pure_shardings(cfg, mesh)
  opt = optax.tree_map_params(tx, lambda _, s: s, abstract_state(tx, params)["opt"],
                              param_shardings, transform_non_params=lambda _: replicated)
  return {"step": replicated, "params": param_shardings, "opt": opt}


def abstract_train(cfg, tcfg: TrainConfig, mesh):
  """The trainer's state without weights or data: (abstract state carrying its shardings, bind,
  optimizer, shardings). `brd train` restores into it; `brd plan` compiles against it."""
  params, bind = build.functional(build.abstract(cfg))
  tx = optim.optimizer(tcfg)
  shardings = state_shardings(cfg, tx, params, mesh)
  state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                       abstract_state(tx, params), shardings)
  return state, bind, tx, shardings


def abstract_batch(batch_size: int, seq_len: int, mesh, kd_topk: int = 0) -> dict:
  """The global batch one step takes (what `normalize_batch` yields), as sharded shapes."""
  bs = batch_sharding(mesh)
  shape = (batch_size, seq_len)
  out = {k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=bs) for k in (
      "decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights",
      "decoder_segment_ids", "decoder_positions")}
  if kd_topk:
    per_token = NamedSharding(mesh, sharding.logical_to_spec(("batch", "length", None), mesh=mesh))
    out["teacher_topk_ids"] = jax.ShapeDtypeStruct(shape + (kd_topk,), jnp.int32,
                                                   sharding=per_token)
    out["teacher_topk_logprobs"] = jax.ShapeDtypeStruct(shape + (kd_topk,), jnp.float32,
                                                        sharding=per_token)
    out["teacher_topk_weights"] = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=bs)
  return out


def init_state(tx, params, shardings, mesh) -> dict:
  """Step 0: the optimizer state is created directly in its shardings."""
  with sharding.use_mesh(mesh):
    opt = jax.jit(tx.init, out_shardings=shardings["opt"])(params)
    step = jax.device_put(np.int32(0), shardings["step"])
  return {"step": step, "params": params, "opt": opt}


def batch_sharding(mesh):
  return NamedSharding(mesh, sharding.logical_to_spec(("batch", "length"), mesh=mesh))


def loss_terms(bind, params, mb: dict):
  """Sums over real target tokens: (nll, z, kd, weights) and per-token nll."""
  model = bind(params)
  logits, _ = model(mb["decoder_input_tokens"], positions_BT=mb["decoder_positions"],
                    segment_ids_BT=mb["decoder_segment_ids"])
  nll, logz = losses.token_nll(logits, mb["decoder_target_tokens"])
  w = mb["decoder_loss_weights"].astype(jnp.float32)
  terms = {"nll": jnp.sum(nll * w), "z": jnp.sum(jnp.square(logz) * w), "weights": jnp.sum(w)}
  if "teacher_topk_ids" in mb:
    kd = losses.kd_forward_kl(logits, mb["teacher_topk_ids"], mb["teacher_topk_logprobs"])
    terms["kd"] = jnp.sum(kd * w * mb.get("teacher_topk_weights", 1.0))
  return terms, nll


def make_train_step(bind, tx, cfg: TrainConfig, mesh, shardings):
  """Returns step(state, batch) -> (state, metrics); batch arrays are (B, T) global arrays."""
  bs = batch_sharding(mesh)
  A = cfg.grad_accum

  def objective(params, mb, total_w):
    t, _ = loss_terms(bind, params, mb)
    obj = t["nll"] + cfg.z_loss * t["z"] + cfg.kd_weight * t.get("kd", 0.0)
    return obj / total_w, t

  def step(state, batch):
    total_w = jnp.maximum(jnp.sum(batch["decoder_loss_weights"].astype(jnp.float32)), 1.0)
    grad_fn = jax.grad(objective, has_aux=True)
    if A == 1:
      grads, t = grad_fn(state["params"], batch, total_w)
    else:
      # Row i of microbatch j is row i*A + j of the batch, so every microbatch stays spread
      # over all batch shards.
      def split(x):
        x = x.reshape(x.shape[0] // A, A, *x.shape[1:]).swapaxes(0, 1)
        return sharding.constrain(x, (None, "batch", "length"))
      mbs = jax.tree.map(split, batch)

      def body(acc, mb):
        g, t = grad_fn(state["params"], mb, total_w)
        return jax.tree.map(jnp.add, acc, (g, t)), None
      zeros = jax.tree.map(jnp.zeros_like, state["params"])
      t0 = {k: jnp.zeros((), jnp.float32) for k in ("nll", "z", "weights")}
      if "teacher_topk_ids" in batch:
        t0["kd"] = jnp.zeros((), jnp.float32)
      (grads, t), _ = jax.lax.scan(body, (zeros, t0), mbs)
    updates, opt = tx.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = {"loss": t["nll"] / total_w, "mean_logz_sq": t["z"] / total_w,
               "grad_norm": optax.tree.norm(grads), "tokens": t["weights"]}
    if "kd" in t:
      metrics["kd"] = t["kd"] / total_w
    return {"step": state["step"] + 1, "params": params, "opt": opt}, metrics

  jitted = jax.jit(step, in_shardings=(shardings, bs),
                   out_shardings=(shardings, NamedSharding(mesh, P())), donate_argnums=(0,))

  def run(state, batch):
    with sharding.use_mesh(mesh):  # activation constraints are read at trace time
      return jitted(state, batch)
  run.jitted = jitted
  return run
