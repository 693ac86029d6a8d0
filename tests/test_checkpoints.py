"""HF import/export round trips, unsafe or corrupt inputs, and GGUF import (all quant types)."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import hf_tiny
from brd_jax import models
from brd_jax.checkpoints import gguf as gguf_ckpt
from brd_jax.checkpoints import hf, resolve
from brd_jax.errors import UserError


@pytest.mark.parametrize("make", [hf_tiny.llama, lambda p: hf_tiny.llama(p, tie=True),
                                  lambda p: hf_tiny.llama(p, qkv_bias=True), hf_tiny.xglm,
                                  hf_tiny.gpt2], ids=["llama", "llama_tied", "qwen2", "xglm", "gpt2"])
def test_import_export_reload_gives_same_logits(tmp_path, make):
  make(tmp_path / "src")
  model, _ = hf.import_dir(tmp_path / "src")
  hf.export_dir(model, tmp_path / "out")
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out",
                                                               dtype=torch.float32)
  assert hf_tiny.jax_vs_torch_diff(model, reloaded) < 1e-4


def test_export_of_sharded_model_equals_unsharded(tmp_path, mesh8):
  hf_tiny.llama(tmp_path / "src")
  m8, _ = hf.import_dir(tmp_path / "src", mesh=mesh8)
  m1, _ = hf.import_dir(tmp_path / "src")
  a, b = hf.export_tensors(m8), hf.export_tensors(m1)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_torch_bin_weights_load_with_weights_only(tmp_path):
  ref = hf_tiny.llama(tmp_path / "st")
  d = tmp_path / "bin"
  d.mkdir()
  (d / "config.json").write_text((tmp_path / "st" / "config.json").read_text())
  torch.save(ref.state_dict(), d / "pytorch_model.bin")
  a, _ = hf.import_dir(tmp_path / "st")
  b, _ = hf.import_dir(d)
  ids = jnp.asarray([[5, 6, 7, 8]])
  np.testing.assert_array_equal(a(ids)[0], b(ids)[0])


def test_pickled_objects_in_bin_are_refused(tmp_path):
  hf_tiny.llama(tmp_path / "st")
  d = tmp_path / "bin"
  d.mkdir()
  (d / "config.json").write_text((tmp_path / "st" / "config.json").read_text())
  torch.save({"x": torch.zeros(2), "evil": object()}, d / "pytorch_model.bin")
  with pytest.raises(UserError, match="weights_only"):
    hf.import_dir(d)


def test_corrupt_and_mismatched_checkpoints_give_clear_errors(tmp_path):
  hf_tiny.llama(tmp_path / "m")
  (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00garbage")
  with pytest.raises(UserError, match="safetensors"):
    hf.import_dir(tmp_path / "m")
  hf_tiny.llama(tmp_path / "n")
  cfg = json.loads((tmp_path / "n" / "config.json").read_text())
  cfg["hidden_size"] = 32
  (tmp_path / "n" / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(UserError, match="shape"):
    hf.import_dir(tmp_path / "n")
  with pytest.raises(UserError, match="no such file"):
    resolve.load(str(tmp_path / "missing"))


def _llama_cpp_permute(w, n_head):
  return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
      w.shape)


def write_tiny_gguf(path, ref, types):
  """Writes `ref` (a tiny HF llama) as a llama.cpp-style GGUF with the given tensor types."""
  import gguf
  from gguf import GGMLQuantizationType as Q
  c = ref.config
  w = gguf.GGUFWriter(str(path), "llama")
  w.add_block_count(c.num_hidden_layers)
  w.add_context_length(c.max_position_embeddings)
  w.add_embedding_length(c.hidden_size)
  w.add_feed_forward_length(c.intermediate_size)
  w.add_head_count(c.num_attention_heads)
  w.add_head_count_kv(c.num_key_value_heads)
  w.add_rope_freq_base(10000.0)
  w.add_layer_norm_rms_eps(c.rms_norm_eps)
  w.add_vocab_size(c.vocab_size)
  sd = {k: v.float().numpy() for k, v in ref.state_dict().items()}
  names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
           "output_norm.weight", "lm_head.weight": "output.weight"}
  layer = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
           "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
           "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
           "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
  for k, v in sd.items():
    if k in names:
      name = names[k]
    else:
      i, rest = k[len("model.layers."):].split(".", 1)
      mod = rest.rsplit(".", 1)[0]
      name = f"blk.{i}.{layer[mod]}.weight"
    if name.endswith("attn_q.weight"):
      v = _llama_cpp_permute(v, c.num_attention_heads)
    if name.endswith("attn_k.weight"):
      v = _llama_cpp_permute(v, c.num_key_value_heads)
    qtype = Q.F32 if v.ndim == 1 else types.get(name.split(".")[-2], Q.F32)
    if qtype == Q.F32:
      w.add_tensor(name, v.astype(np.float32))
    elif qtype == Q.F16:
      w.add_tensor(name, v.astype(np.float16))
    else:
      w.add_tensor(name, gguf.quants.quantize(v, qtype), raw_dtype=qtype)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


@pytest.mark.parametrize("kind", ["quantised", "bf16"])
def test_gguf_import_all_quant_types_matches_transformers(tmp_path, kind):
  from gguf import GGMLQuantizationType as Q
  ref = hf_tiny.llama(tmp_path / "src")
  types = {"attn_q": Q.F16, "attn_k": Q.Q8_0, "attn_v": Q.Q4_0, "attn_output": Q.Q4_1,
           "ffn_gate": Q.Q8_0, "ffn_up": Q.Q4_0, "ffn_down": Q.Q4_1, "output": Q.F16}
  if kind == "bf16":  # every matrix BF16, as llama.cpp's convert writes a bf16 model
    types = {k: Q.BF16 for k in types}
  write_tiny_gguf(tmp_path / "tiny.gguf", ref, types)
  model, cfg, _ = gguf_ckpt.import_file(tmp_path / "tiny.gguf")
  assert (cfg.n_heads, cfg.n_kv_heads, cfg.tie_embeddings) == (4, 2, False)
  theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf",
                                                             dtype=torch.float32)
  assert hf_tiny.jax_vs_torch_diff(model, theirs) < 1e-4
  # Quantisation noise is real but small next to the fp32 source model.
  ids, mask, pos = hf_tiny.left_padded_batch()
  diff = hf_tiny.masked_max_diff(hf_tiny.hf_logits(theirs, ids, mask, pos),
                                 hf_tiny.hf_logits(ref, ids, mask, pos), mask)
  assert 1e-4 < diff < 0.5


def test_gguf_unpermute_inverts_llama_cpp_permute():
  w = np.arange(8 * 2 * 3 * 5, dtype=np.float32).reshape(8 * 2 * 3, 5)
  np.testing.assert_array_equal(gguf_ckpt.unpermute_rope_rows(_llama_cpp_permute(w, 8), 8), w)


def test_sharded_import_puts_each_shard_on_its_device(tmp_path, mesh8):
  hf_tiny.llama(tmp_path)
  model, _ = hf.import_dir(tmp_path, mesh=mesh8)
  w_up = model.layers["w_up"][...]          # (L, D, F): D over fsdp, F over tensor
  assert w_up.sharding.spec == models.param_shardings(model.cfg, mesh8)[("layers", "w_up")].spec
  shard_shapes = {s.data.shape for s in w_up.addressable_shards}
  assert shard_shapes == {(2, 32, 48)}
