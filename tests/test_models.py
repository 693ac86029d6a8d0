"""Decoder parity with PyTorch `transformers` (the independent reference) for every family."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hf_tiny
from brd_jax import models, sharding
from brd_jax.checkpoints import hf

FAMILIES = {
    "llama_gqa_untied": lambda p: hf_tiny.llama(p, tie=False),
    "llama_gqa_tied": lambda p: hf_tiny.llama(p, tie=True),
    "qwen2_qkv_bias": lambda p: hf_tiny.llama(p, qkv_bias=True),
    "llama3_rope": lambda p: hf_tiny.llama(p, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}),
    "xglm": hf_tiny.xglm,
    "gpt2": hf_tiny.gpt2,
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
  path = tmp_path_factory.mktemp(request.param)
  ref = FAMILIES[request.param](path)
  return request.param, path, ref


def test_left_padded_logits_match_transformers(family):
  name, path, ref = family
  model, _ = hf.import_dir(path)
  diff = hf_tiny.jax_vs_torch_diff(model, ref)
  assert diff < 1e-4, f"{name}: max |logit diff| {diff}"


def test_sharded_8_devices_equal_one_device(family, mesh8):
  _, path, _ = family
  ids, mask, _ = hf_tiny.left_padded_batch()
  model1, _ = hf.import_dir(path)
  expected, _ = model1(jnp.asarray(ids), segment_ids_BT=jnp.asarray(mask))
  model8, cfg = hf.import_dir(path, mesh=mesh8)
  wq = model8.layers["wq"][...]
  assert len(wq.sharding.device_set) == 8
  with sharding.use_mesh(mesh8):
    tokens = jax.device_put(jnp.asarray(ids), sharding.named_sharding(mesh8, ("batch", "length")))
    got, _ = jax.jit(lambda m, t, s: m(t, segment_ids_BT=s))(model8, tokens, jnp.asarray(mask))
  assert hf_tiny.masked_max_diff(got, expected, mask) < 1e-5


def test_kv_cache_prefill_then_steps_equals_full_forward(family):
  _, path, _ = family
  model, _ = hf.import_dir(path)
  ids, mask, _ = hf_tiny.left_padded_batch(lengths=(9, 12, 5))
  full, _ = model(jnp.asarray(ids), segment_ids_BT=jnp.asarray(mask))
  cache = model.init_cache(ids.shape[0], 16)
  pre, cache = model(jnp.asarray(ids[:, :8]), segment_ids_BT=jnp.asarray(mask[:, :8]), cache=cache)
  steps = [pre]
  for t in range(8, 12):
    lg, cache = model(jnp.asarray(ids[:, t:t + 1]), segment_ids_BT=jnp.asarray(mask[:, t:t + 1]),
                      cache=cache)
    steps.append(lg)
  got = jnp.concatenate(steps, 1)
  assert hf_tiny.masked_max_diff(got, full, mask) < 1e-5


def test_bf16_cached_decoding_keeps_an_fp32_cache_on_cpu_and_follows_transformers(tmp_path):
  """bf16 on CPU caches keys and values in fp32 (a bf16 cache was converted whole every step);
  prefill then steps stays as close to transformers' fp32 logits as its bf16 model does."""
  import torch
  ref = hf_tiny.llama(tmp_path)
  ids, mask, pos = hf_tiny.left_padded_batch(lengths=(9, 12, 5))
  want = hf_tiny.hf_logits(ref, ids, mask, pos)
  theirs = hf_tiny.masked_max_diff(hf_tiny.hf_logits(ref.to(torch.bfloat16), ids, mask, pos),
                                   want, mask)
  model, _ = hf.import_dir(tmp_path, overrides={"dtype": "bfloat16"})
  cache = model.init_cache(ids.shape[0], 16)
  assert cache.k.dtype == jnp.float32
  pre, cache = model(jnp.asarray(ids[:, :8]), segment_ids_BT=jnp.asarray(mask[:, :8]), cache=cache)
  steps = [pre]
  for t in range(8, 12):
    lg, cache = model(jnp.asarray(ids[:, t:t + 1]), segment_ids_BT=jnp.asarray(mask[:, t:t + 1]),
                      cache=cache)
    steps.append(lg)
  ours = hf_tiny.masked_max_diff(jnp.concatenate(steps, 1), want, mask)
  assert 0 < ours <= 1.5 * theirs + 0.02, (ours, theirs)


def test_packed_segments_equal_separate_forwards(family):
  _, path, _ = family
  model, _ = hf.import_dir(path)
  rng = np.random.default_rng(1)
  docs = [rng.integers(3, 128, n) for n in (5, 9, 4)]
  tokens = np.concatenate(docs)[None]
  seg = np.concatenate([np.full(len(d), i + 1) for i, d in enumerate(docs)])[None]
  pos = np.concatenate([np.arange(len(d)) for d in docs])[None]
  packed, _ = model(jnp.asarray(tokens), jnp.asarray(pos), jnp.asarray(seg))
  start = 0
  for d in docs:
    alone, _ = model(jnp.asarray(d[None]))
    np.testing.assert_allclose(packed[0, start:start + len(d)], alone[0], atol=1e-5)
    start += len(d)


@pytest.mark.parametrize("scan,remat", [(False, "none"), (True, "full"), (False, "dots"),
                                        (True, "dots")])
def test_scan_and_remat_options_do_not_change_logits(tmp_path, scan, remat):
  hf_tiny.llama(tmp_path)
  ids, mask, _ = hf_tiny.left_padded_batch()
  base, _ = hf.import_dir(tmp_path)
  other, _ = hf.import_dir(tmp_path, overrides={"scan_layers": scan, "remat": remat})
  loss = lambda m: jnp.mean(m(jnp.asarray(ids), segment_ids_BT=jnp.asarray(mask))[0] ** 2)
  from flax import nnx
  l1, g1 = nnx.value_and_grad(loss)(base)
  l2, g2 = nnx.value_and_grad(loss)(other)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  np.testing.assert_allclose(g1.layers["w_up"][...], g2.layers["w_up"][...], atol=1e-6)


def test_bf16_compute_stays_close_to_fp32(tmp_path):
  hf_tiny.llama(tmp_path)
  ids, mask, _ = hf_tiny.left_padded_batch()
  f32, _ = hf.import_dir(tmp_path)
  bf16, _ = hf.import_dir(tmp_path, overrides={"dtype": "bfloat16"})
  a, _ = f32(jnp.asarray(ids), segment_ids_BT=jnp.asarray(mask))
  b, _ = bf16(jnp.asarray(ids), segment_ids_BT=jnp.asarray(mask))
  assert b.dtype == jnp.float32  # logits are always returned in fp32
  assert bf16.layers["wq"][...].dtype == jnp.float32  # master weights stay fp32
  diff = hf_tiny.masked_max_diff(a, b, mask)
  assert 0 < diff < 0.05


def test_bf16_logits_are_as_close_to_fp32_as_transformers_bf16_on_every_family(family):
  """bf16 compute (fp32 master weights) against the fp32 reference: no further from it than
  transformers' own bf16 model is (x1.5 + 0.02 for the rounding points that differ)."""
  import torch
  name, path, ref = family
  ids, mask, pos = hf_tiny.left_padded_batch()
  want = hf_tiny.hf_logits(ref, ids, mask, pos)
  theirs = hf_tiny.masked_max_diff(hf_tiny.hf_logits(ref.to(torch.bfloat16), ids, mask, pos),
                                   want, mask)
  ref.to(torch.float32)
  bf16, _ = hf.import_dir(path, overrides={"dtype": "bfloat16"})
  got, _ = bf16(jnp.asarray(ids), segment_ids_BT=jnp.asarray(mask))
  ours = hf_tiny.masked_max_diff(got, want, mask)
  assert 0 < ours <= 1.5 * theirs + 0.02, (name, ours, theirs)


def test_bf16_matmul_and_its_gradients_equal_xlas_bf16_dot():
  """`layers.matmul` in bf16 (fp32 products, AMX on this CPU) against XLA's own bf16 `x @ w` and
  its autodiff: forward and both gradients equal up to bf16 rounding; in fp32 up to fp32's
  rounding."""
  from brd_jax.models import layers
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 5, 48)), jnp.bfloat16)
  w = jnp.asarray(rng.standard_normal((48, 40)), jnp.bfloat16)
  c = jnp.asarray(rng.standard_normal((2, 5, 40)), jnp.float32)

  def value_and_grads(f, x, w):
    loss = lambda x, w: jnp.sum(f(x, w).astype(jnp.float32) * c)
    return jax.tree.leaves(jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, w))
  ours = value_and_grads(layers.matmul, x, w)
  plain = value_and_grads(lambda a, b: a @ b, x, w)
  def dot_operands(f):  # the parameter types of the computation that holds the dot
    text = jax.jit(f).lower(x, w).compile().as_text()
    block = next(b for b in text.split("\n\n") if " dot(" in b)
    return {ln.split("=")[1].split("[")[0].strip() for ln in block.splitlines() if "parameter(" in ln}
  assert dot_operands(layers.matmul) == {"bf16"}  # what XLA:CPU runs on AMX
  assert dot_operands(lambda a, b: a @ b) == {"f32"}  # upcast: why layers.matmul exists
  for a, b in zip(ours, plain):
    assert a.dtype == b.dtype
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                               rtol=2e-2, atol=2e-2)
  # fp32 takes the same custom VJP on CPU (its weight gradient as an einsum of its own): equal
  # to autodiff's at fp32 rounding
  x, w = x.astype(jnp.float32), w.astype(jnp.float32)
  for a, b in zip(value_and_grads(layers.matmul, x, w), value_and_grads(lambda a, b: a @ b, x, w)):
    assert a.dtype == b.dtype == jnp.float32
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_named_configs_build_and_count_params():
  # The published sizes: SmolLM2 135M, XGLM 564M, GPT-2 124M / 774M, Vicuna 13B.
  expected = {"smollm2_135m": 134.5e6, "xglm_564m": 564.5e6, "gpt2_124m": 124.4e6,
              "gpt2_774m": 774.0e6, "vicuna_13b": 13.0e9}
  for name, n in expected.items():
    cfg = models.named_config(name)
    shapes = models.param_specs(cfg)
    total = sum(int(np.prod(s.shape)) for s, _ in shapes.values())
    assert abs(total - n) / n < 0.01, (name, total)
    assert total == cfg.num_params()
