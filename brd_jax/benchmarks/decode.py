"""`brd bench decode`: JAX engine vs `transformers` generate on the same dequantised weights.

SmolLM2-135M-Instruct, fp32 (or bf16 weights and compute on both sides), greedy with KV cache, batch 32, 64-token prompts, 64 new tokens
(end tokens ignored on both sides so every row decodes all 64). Both are warmed up once, then
timed over `repeats` runs; the median wall time gives tokens/s.
"""
from __future__ import annotations

import pathlib
import statistics
import tempfile
import time

import numpy as np

from brd_jax.benchmarks import report

TEXT = (
    "The river valley was settled by farmers who grew wheat and barley on the terraces. "
    "In 1842 a railway reached the town, and within a decade its population doubled. "
    "Marie Curie, born in Warsaw, shared the Nobel Prize in Physics in 1903 with Pierre Curie. "
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules. "
    "The committee postponed its vote after two members questioned the budget estimates. "
    "Mount Kilimanjaro, the highest mountain in Africa, rises nearly 5,900 metres above sea level. "
    "Early computers filled entire rooms and used vacuum tubes that often burned out. "
    "She opened the letter slowly, afraid of what the hospital might have written. ")


def make_prompts(tokenizer, batch: int, length: int) -> list[list[int]]:
  ids = tokenizer.encode(TEXT * 8)
  step = max(1, (len(ids) - length) // batch)
  return [ids[i * step:i * step + length] for i in range(batch)]


def run(model_spec: str = "asset:smollm2-135m-instruct", batch: int = 32, prompt_len: int = 64,
        new_tokens: int = 64, repeats: int = 2, dtype: str = "float32",
        json_path: str | None = None) -> dict:
  import torch
  import transformers
  from brd_jax.checkpoints import hf, resolve
  from brd_jax.inference.engine import Engine
  from brd_jax.inference.sampling import Sampling

  loaded = resolve.load(model_spec, overrides={"dtype": dtype, "param_dtype": dtype})
  prompts = make_prompts(loaded.tokenizer, batch, prompt_len)
  engine = Engine(loaded.model, loaded.tokenizer, max_batch=batch)

  def ours():
    gens = engine.generate(prompts, new_tokens, Sampling(), eos_ids=())
    return [g.tokens for g in gens]

  with tempfile.TemporaryDirectory() as tmp:
    hf.export_dir(loaded.model, pathlib.Path(tmp))  # the same dequantised fp32 weights
    peer_model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp, dtype=getattr(torch, dtype)).eval()
  input_ids = torch.tensor(prompts)

  def peer():
    with torch.no_grad():
      out = peer_model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                do_sample=False, use_cache=True, pad_token_id=0)
    return out[:, prompt_len:].tolist()

  timings = {}
  results = {}
  for name, fn in (("project", ours), ("peer", peer)):
    results[name] = fn()  # warm-up (and compilation for the project)
    times = []
    for _ in range(repeats):
      t = time.perf_counter()
      results[name] = fn()
      times.append(time.perf_counter() - t)
    timings[name] = statistics.median(times)
    print(f"{name}: {[f'{x:.2f}s' for x in times]}")

  n_tok = batch * new_tokens
  tps = {k: n_tok / v for k, v in timings.items()}
  agree = float(np.mean([a == b for a, b in zip(results["project"], results["peer"])]))
  return report(
      "decode_tokens_per_s", tps["project"], tps["peer"],
      {"agreement": agree, "batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens,
       "dtype": dtype, "torch_threads": torch.get_num_threads()},
      [("model", model_spec), ("batch x prompt + new", f"{batch} x {prompt_len} + {new_tokens}"),
       ("brd_jax tokens/s", f"{tps['project']:.1f}"),
       ("transformers tokens/s", f"{tps['peer']:.1f}"),
       ("rows with identical tokens", f"{agree:.3f}")], json_path,
      model_cfg=loaded.model.cfg, kernel_rows=batch, dtype=dtype)
