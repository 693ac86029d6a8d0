"""A tiny random llama teacher with a byte-level tokenizer and a chat template, saved as an HF dir."""
import torch
import transformers

from brd_jax import tokenizer

CHAT = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}")


def make(path, seed=0):
  torch.manual_seed(seed)
  cfg = transformers.LlamaConfig(vocab_size=258, hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                 max_position_embeddings=4096, bos_token_id=1, eos_token_id=1,
                                 pad_token_id=0)
  model = transformers.LlamaForCausalLM(cfg)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  model.save_pretrained(path)
  tok = tokenizer.byte_level()
  tok.chat_template = CHAT
  tok.save(path)
  return path
