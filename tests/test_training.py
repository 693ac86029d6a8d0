"""The trainer: falling loss, mesh invariance, packing, grad accumulation, KD loss, init."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import brd_corpus
from brd_jax import config, sharding
from brd_jax.models import build
from brd_jax.models import config as mc
from brd_jax.training import losses, metrics, optim, student
from brd_jax.training import step as step_lib
from brd_jax.training.config import StudentConfig, TrainConfig

TINY = ["models/llama_tiny"]


def tiny_bindings(par_dir, led_dir, **extra):
  b = {"model.vocab_size": 320, "student.tokenizer": "'bytes'",
       "data.paragraphs_dir": f"'{par_dir}'", "data.ledger_dir": f"'{led_dir}'",
       "data.seq_len": 128, "train.batch_size": 8, "train.log_every": 1,
       "train.warmup_steps": 10, "train.learning_rate": 3e-3, "train.tensorboard": False,
       "train.decay": "'constant'"}  # so a 20-step run follows the 200-step run's schedule
  b.update(extra)
  return [f"{k}={v}" for k, v in b.items()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  return brd_corpus.make(tmp_path_factory.mktemp("corpus"), n_paragraphs=60)


def _train(workdir, mesh, bindings):
  from brd_jax.training import loop
  config.parse(TINY, bindings, finalize=False)
  loop.run(workdir, mesh, progress=False)
  return metrics.read(workdir)


def test_tiny_student_loss_falls_and_8_device_mesh_matches_1_device(corpus, tmp_path):
  recs = _train(tmp_path / "one", sharding.make_mesh((1, 1, 1), jax.devices()[:1]),
                tiny_bindings(*corpus, **{"train.steps": 200, "train.checkpoint_every": 100}))
  loss = np.array([r["loss"] for r in recs])
  assert len(loss) == 200
  assert loss[-20:].mean() < 0.5 * loss[:5].mean(), loss[::20]
  assert (tmp_path / "one" / "loss.png").stat().st_size > 10_000
  assert sorted(p.name for p in (tmp_path / "one" / "checkpoints").iterdir()
                if p.name.isdigit()) == ["100", "200"]

  recs8 = _train(tmp_path / "eight", sharding.make_mesh((2, 2, 2)),
                 tiny_bindings(*corpus, **{"train.steps": 20}))
  loss8 = np.array([r["loss"] for r in recs8])
  np.testing.assert_allclose(loss8, loss[:20], rtol=1e-4)


def _tiny_model(seed=0, **kw):
  cfg = mc.named_config("llama_tiny").replace(**kw)
  return build.create(cfg, seed=seed)


def _lm_batch(rows, T):
  """Unpacked batch from token lists (targets = tokens, inputs shifted with BOS 1)."""
  B = len(rows)
  tgt = np.zeros((B, T), np.int32)
  for i, r in enumerate(rows):
    tgt[i, :len(r)] = r
  inp = np.concatenate([np.ones((B, 1), np.int32), tgt[:, :-1]], 1) * (tgt != 0)
  return step_lib.normalize_batch({"decoder_input_tokens": inp, "decoder_target_tokens": tgt,
                                   "decoder_loss_weights": (tgt != 0).astype(np.int32)})


def test_packed_batch_gives_each_example_its_unpacked_loss():
  rng = np.random.default_rng(0)
  examples = [rng.integers(2, 256, n).tolist() for n in (9, 14, 5)]
  model = _tiny_model()
  params, bind = build.functional(model)
  # Pack the three examples into one row the way seqio does.
  tgt, inp, seg, pos = [], [], [], []
  for s, ex in enumerate(examples, 1):
    tgt += ex
    inp += [1] + ex[:-1]
    seg += [s] * len(ex)
    pos += list(range(len(ex)))
  T = 32
  pad = lambda x: np.array([x + [0] * (T - len(x))], np.int32)
  packed = {"decoder_input_tokens": pad(inp), "decoder_target_tokens": pad(tgt),
            "decoder_loss_weights": (pad(tgt) != 0).astype(np.int32),
            "decoder_segment_ids": pad(seg), "decoder_positions": pad(pos)}
  _, nll = step_lib.loss_terms(bind, params, packed)
  per_seg, count = losses.per_segment_mean(nll, packed["decoder_loss_weights"],
                                           packed["decoder_segment_ids"], 3)
  alone = _lm_batch(examples, 16)
  _, nll1 = step_lib.loss_terms(bind, params, alone)
  w = alone["decoder_loss_weights"]
  unpacked = (np.asarray(nll1) * w).sum(1) / w.sum(1)
  np.testing.assert_array_equal(np.asarray(count[0]), [9, 14, 5])
  np.testing.assert_allclose(np.asarray(per_seg[0]), unpacked, rtol=1e-5, atol=1e-6)


def test_grad_accumulation_equals_one_big_batch(mesh8):
  rng = np.random.default_rng(1)
  batch = _lm_batch([rng.integers(2, 256, int(n)).tolist() for n in rng.integers(5, 30, 8)], 32)
  results = []
  for accum in (1, 4):
    tcfg = TrainConfig(batch_size=8, grad_accum=accum, warmup_steps=0, learning_rate=1e-2)
    model = build.create(mc.named_config("llama_tiny"), mesh8)
    params, bind = build.functional(model)
    tx = optim.optimizer(tcfg)
    sh = step_lib.state_shardings(model.cfg, tx, params, mesh8)
    state = step_lib.init_state(tx, params, sh, mesh8)
    fn = step_lib.make_train_step(bind, tx, tcfg, mesh8, sh)
    gb = {k: sharding.global_batch(v, mesh8) for k, v in batch.items()}
    state, m = fn(state, gb)
    results.append((float(m["loss"]), float(m["grad_norm"]), jax.device_get(state["params"])))
  assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
  assert results[0][1] == pytest.approx(results[1][1], rel=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5),
               results[0][2], results[1][2])


def test_kd_forward_kl_matches_numpy():
  rng = np.random.default_rng(2)
  logits = rng.standard_normal((2, 3, 11)).astype(np.float32)
  ids = np.stack([rng.permutation(11)[:4] for _ in range(6)]).reshape(2, 3, 4)
  t_lp = np.log(rng.dirichlet(np.ones(4), (2, 3))).astype(np.float32) - 0.3  # unnormalised top-k
  got = np.asarray(losses.kd_forward_kl(jnp.asarray(logits), jnp.asarray(ids), jnp.asarray(t_lp)))
  ls = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  pt = np.exp(t_lp) / np.exp(t_lp).sum(-1, keepdims=True)
  want = (pt * (np.log(pt) - np.take_along_axis(ls, ids, -1))).sum(-1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_no_weight_decay_on_norms_and_biases():
  params, _ = build.functional(_tiny_model(qkv_bias=True))
  mask = optim.decay_mask(params)
  assert mask["embed"] and mask["layers"]["wq"] and mask["lm_head"]
  assert not mask["final_norm"] and not mask["layers"]["attn_norm"]
  assert not mask["layers"]["bq"]


def test_schedule_warms_up_then_decays():
  s = optim.schedule(TrainConfig(steps=100, warmup_steps=10, learning_rate=1.0,
                                 end_lr_ratio=0.1))
  assert float(s(0)) == 0.0 and float(s(10)) == pytest.approx(1.0)
  assert float(s(55)) == pytest.approx(0.55, abs=0.01) and float(s(100)) == pytest.approx(0.1)


def test_keep_every_kth_layer(tmp_path):
  model = _tiny_model(n_layers=5)
  small, cfg = student.keep_layers(model, 2)
  assert cfg.n_layers == 3
  big, sm = build.flat_params(model), build.flat_params(small)
  for path, arr in sm.items():
    want = np.asarray(big[path])[[0, 2, 4]] if path[0] == "layers" else np.asarray(big[path])
    np.testing.assert_array_equal(np.asarray(arr), want)


def test_scratch_student_needs_a_large_enough_vocab(tmp_path):
  from brd_jax.errors import UserError
  config.parse(TINY, [], finalize=False)
  with pytest.raises(UserError, match="vocab_size"):
    student.init(StudentConfig(tokenizer="bytes"), None)


def _one_step(model, batch, **tcfg_kw):
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  params, bind = build.functional(model)
  tcfg = TrainConfig(batch_size=len(batch["decoder_target_tokens"]), warmup_steps=0,
                     learning_rate=1e-3, **tcfg_kw)
  tx = optim.optimizer(tcfg)
  sh = step_lib.state_shardings(model.cfg, tx, params, mesh)
  state = step_lib.init_state(tx, params, sh, mesh)
  fn = step_lib.make_train_step(bind, tx, tcfg, mesh, sh)
  return fn, state, {k: sharding.global_batch(v, mesh) for k, v in batch.items()}


def test_z_loss_objective_and_gradient_match_torch(tmp_path):
  """loss + z_loss * mean(logsumexp(logits)^2): our metrics and gradient norm against torch
  autograd on the same HF weights and batch."""
  import hf_tiny
  import torch
  from brd_jax.checkpoints import hf
  ref = hf_tiny.llama(tmp_path, seed=4)
  model, _ = hf.import_dir(tmp_path)
  rng = np.random.default_rng(5)
  batch = _lm_batch([rng.integers(3, 128, int(n)).tolist() for n in (20, 9, 31, 14)], 32)
  z = 0.25
  fn, state, gb = _one_step(model, batch, z_loss=z)
  _, m = fn(state, gb)
  inp = torch.from_numpy(np.asarray(batch["decoder_input_tokens"])).long()
  tgt = torch.from_numpy(np.asarray(batch["decoder_target_tokens"])).long()
  w = torch.from_numpy(np.asarray(batch["decoder_loss_weights"])).float()
  logits = ref(inp).logits.float()
  lse = torch.logsumexp(logits, -1)
  nll = lse - logits.gather(-1, tgt[..., None])[..., 0]
  obj = ((nll + z * lse ** 2) * w).sum() / w.sum()
  obj.backward()
  grad_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in ref.parameters()))
  nll, lse = nll.detach(), lse.detach()
  assert float(m["loss"]) == pytest.approx(float((nll * w).sum() / w.sum()), rel=1e-5)
  assert float(m["mean_logz_sq"]) == pytest.approx(float((lse ** 2 * w).sum() / w.sum()), rel=1e-5)
  assert float(m["grad_norm"]) == pytest.approx(float(grad_norm), rel=1e-4)
  fn0, state0, gb0 = _one_step(hf.import_dir(tmp_path)[0], batch)  # the step donated `model`
  _, m0 = fn0(state0, gb0)
  assert abs(float(m0["grad_norm"]) - float(m["grad_norm"])) > 1e-3  # z-loss moves the gradient


def test_bf16_training_follows_fp32_with_fp32_master_weights():
  rng = np.random.default_rng(6)
  batch = _lm_batch([rng.integers(3, 256, int(n)).tolist() for n in rng.integers(10, 60, 8)], 64)
  curves = {}
  for dtype in ("float32", "bfloat16"):
    model = _tiny_model(seed=2, dtype=dtype)
    fn, state, gb = _one_step(model, batch)
    losses_ = []
    for _ in range(25):
      state, m = fn(state, gb)
      losses_.append(float(m["loss"]))
    curves[dtype] = np.array(losses_)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state["params"]))
  f32, b16 = curves["float32"], curves["bfloat16"]
  assert b16[-5:].mean() < 0.7 * b16[:3].mean(), b16  # it learns
  assert np.abs(b16 - f32).max() / f32.max() < 0.05, (b16, f32)  # bf16 rounding, not a bug
  assert np.abs(b16 - f32).max() > 0  # the bf16 path ran
