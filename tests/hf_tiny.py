"""Random tiny `transformers` models saved to disk, the independent reference for parity tests."""
import numpy as np
import torch
import transformers


def llama(tmp_path, tie=False, qkv_bias=False, rope_scaling=None, seed=0):
  torch.manual_seed(seed)
  kw = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            tie_word_embeddings=tie, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
            pad_token_id=0)
  if rope_scaling:
    kw["rope_scaling"] = rope_scaling
  if qkv_bias:
    cfg = transformers.Qwen2Config(**kw, use_sliding_window=False)
    model = transformers.Qwen2ForCausalLM(cfg)
  else:
    cfg = transformers.LlamaConfig(**kw)
    model = transformers.LlamaForCausalLM(cfg)
  return _save(model, tmp_path)


def xglm(tmp_path, seed=0):
  torch.manual_seed(seed)
  cfg = transformers.XGLMConfig(vocab_size=128, d_model=64, ffn_dim=96, num_layers=2,
                                attention_heads=4, max_position_embeddings=128, dropout=0.0,
                                attention_dropout=0.0, activation_dropout=0.0)
  return _save(transformers.XGLMForCausalLM(cfg), tmp_path)


def gpt2(tmp_path, seed=0):
  torch.manual_seed(seed)
  cfg = transformers.GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
  return _save(transformers.GPT2LMHeadModel(cfg), tmp_path)


def _save(model, path):
  # Random init leaves biases and norms at 0 / 1; perturb everything so parity is meaningful.
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.02 * torch.randn_like(p))
  model.eval()
  model.save_pretrained(path)
  return model


def left_padded_batch(rng_seed=0, vocab=128, lengths=(7, 12, 3, 12)):
  """ids (B,T), attention mask and HF-style position ids for a left-padded batch."""
  rng = np.random.default_rng(rng_seed)
  T = max(lengths)
  ids = np.zeros((len(lengths), T), np.int64)
  mask = np.zeros((len(lengths), T), np.int64)
  for i, n in enumerate(lengths):
    ids[i, T - n:] = rng.integers(3, vocab, n)
    mask[i, T - n:] = 1
  pos = np.maximum(np.cumsum(mask, 1) - 1, 0)
  return ids, mask, pos


def hf_logits(model, ids, mask, pos):
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                 position_ids=torch.tensor(pos)).logits.float().numpy()


def masked_max_diff(a, b, mask):
  """max |a - b| over the real (non-padding) positions."""
  return float(np.abs(np.asarray(a) - np.asarray(b))[np.asarray(mask).astype(bool)].max())


def jax_vs_torch_diff(model, torch_model):
  """Masked max |logit difference| of a Flax model and a torch model on the standard batch."""
  import jax.numpy as jnp
  ids, mask, pos = left_padded_batch()
  got, _ = model(jnp.asarray(ids), segment_ids_BT=jnp.asarray(mask))
  return masked_max_diff(got, hf_logits(torch_model, ids, mask, pos), mask)
