"""`brd bench generate`: the teacher's reading (NER + QRA) through `brd generate`'s engine vs
`transformers` generate on the same prompts.

Real sentences (the `english-botchan` text, split and filtered as `brd corpus` / `brd generate`
do), the default templates, greedy, fp32. The peer generates in static left-padded batches of the
same size, in the same (length-sorted) order, from the same dequantised weights. The engine runs
the whole workload once to compile, the peer a small batch to warm up; then each is timed once. Useful tokens are the generated ones up to the end
token; `agreement` is the fraction of rows whose tokens are identical. The ablation column is the
engine with each of its three switches off in turn.
"""
from __future__ import annotations

import collections
import dataclasses
import pathlib
import tempfile
import time

from brd_jax.benchmarks import report

SWITCHES = {"continuous_batching": "continuous batching", "prefix_cache": "shared-prefix cache",
            "speculate": "prompt-lookup speculation"}


def workload(tokenizer, sentences: int, cfg) -> dict[str, list[list[int]]]:
  """behaviour -> prompt ids: the first `sentences` sentences of the real text `brd generate`
  would read, with its default templates and chat format."""
  from brd_jax.behaviors import generate
  from brd_jax.benchmarks.split import _paragraphs
  from brd_jax.corpus import split
  from brd_jax.inference import chat
  splitter = split.make("blingfire")
  paragraphs = [{"id": str(i), "sentences": splitter(p), "text": p}
                for i, p in enumerate(_paragraphs(None)[:4 * sentences])]
  units = generate.build_units(paragraphs, cfg, "bench")
  chat_template, system = chat.template()
  out = {}
  for b in cfg.behaviors:
    mine = [u for u in units if u.behavior == b][:sentences]
    out[b] = [tokenizer.encode(p) for p in generate.unit_prompts(tokenizer, mine, chat_template,
                                                                  system)]
  return out


def _ours(engine, prompts, cfg):
  from brd_jax.inference.sampling import Sampling
  out = {}
  for b, ps in prompts.items():
    for i, g in engine.stream(ps, cfg.max_new_tokens, Sampling()):
      out[(b, i)] = g.tokens
  return out


def _peer(model, prompts, cfg, batch: int, eos: list[int], pad_id: int):
  import torch
  out = {}
  for b, ps in prompts.items():
    order = sorted(range(len(ps)), key=lambda i: (len(ps[i]), i))
    for s in range(0, len(order), batch):
      idx = order[s:s + batch]
      width = max(len(ps[i]) for i in idx)
      ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
      mask = torch.zeros((len(idx), width), dtype=torch.long)
      for r, i in enumerate(idx):
        ids[r, width - len(ps[i]):] = torch.tensor(ps[i])
        mask[r, width - len(ps[i]):] = 1
      with torch.no_grad():
        gen = model.generate(ids, attention_mask=mask, max_new_tokens=cfg.max_new_tokens,
                             do_sample=False, use_cache=True, eos_token_id=eos,
                             pad_token_id=pad_id)
      for r, i in enumerate(idx):
        toks = gen[r, width:].tolist()
        cut = next((j for j, t in enumerate(toks) if t in eos), len(toks))
        out[(b, i)] = toks[:cut]
  return out


def agreement(ours: dict, peer: dict) -> float:
  """The share of the peer's rows whose generated tokens the engine's equal exactly."""
  return sum(ours[k] == peer[k] for k in peer) / len(peer)


def _timed(fn, engine):
  fn()  # warm-up: compilation, caches
  engine.stats.clear()
  t = time.perf_counter()
  result = fn()
  return result, time.perf_counter() - t


def run(model_spec: str = "asset:smollm2-135m-instruct", sentences: int = 64, batch: int = 32,
        max_new_tokens: int = 160, ablation: bool = True, json_path: str | None = None) -> dict:
  import torch
  import transformers
  from brd_jax.behaviors import generate
  from brd_jax.behaviors.config import GenerateConfig
  from brd_jax.checkpoints import hf, resolve

  cfg = GenerateConfig(teacher=model_spec, batch_size=batch, max_new_tokens=max_new_tokens,
                       behaviors=("ner", "qra"))
  loaded = resolve.load(model_spec)
  prompts = workload(loaded.tokenizer, sentences, cfg)
  n_rows = sum(len(p) for p in prompts.values())
  engine = generate.make_engine(cfg, loaded, None)
  eos = list(engine._eos(None))  # pylint: disable=protected-access
  ours, t_ours = _timed(lambda: _ours(engine, prompts, cfg), engine)
  print(f"brd_jax: {t_ours:.1f}s  {dict(engine.stats)}", flush=True)

  with tempfile.TemporaryDirectory() as tmp:
    hf.export_dir(loaded.model, pathlib.Path(tmp))  # the same dequantised fp32 weights
    peer_model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp, dtype=torch.float32).eval()
  small = {b: p[:2] for b, p in prompts.items()}
  _peer(peer_model, small, dataclasses.replace(cfg, max_new_tokens=4), batch, eos,
        engine._pad_id())  # pylint: disable=protected-access
  t = time.perf_counter()
  peer = _peer(peer_model, prompts, cfg, batch, eos, engine._pad_id())  # pylint: disable=protected-access
  t_peer = time.perf_counter() - t
  print(f"transformers: {t_peer:.1f}s", flush=True)

  useful = lambda res: sum(len(v) for v in res.values())
  tps = {"project": useful(ours) / t_ours, "peer": useful(peer) / t_peer}
  agree = agreement(ours, peer)
  off = {}
  if ablation:
    defaults = {"continuous_batching": cfg.continuous_batching, "prefix_cache": cfg.prefix_cache,
                "speculate": generate.speculate_k(cfg)}
    for name, value in defaults.items():
      flipped = (0 if value else 4) if name == "speculate" else not value
      alt = dataclasses.replace(cfg, **{name: flipped})
      eng = generate.make_engine(alt, loaded, None)
      res, dt = _timed(lambda eng=eng, alt=alt: _ours(eng, prompts, alt), eng)
      off[name] = {"value": flipped, "tokens_per_s": useful(res) / dt, "seconds": dt,
                   "agreement": agreement(res, peer), "engine": dict(eng.stats)}
      print(f"{name}={flipped}: {dt:.1f}s  {dict(eng.stats)}", flush=True)
  lengths = collections.Counter(min(len(v) // 40 * 40, 160) for v in ours.values())
  rows = [("model", f"{model_spec}, fp32, greedy"),
          ("workload", f"{sentences} sentences x {', '.join(prompts)} = {n_rows} rows, "
                       f"batch {batch}, <= {max_new_tokens} new tokens"),
          ("useful output tokens", f"{useful(ours)} (peer {useful(peer)})"),
          ("brd_jax", f"{tps['project']:.1f} tokens/s, {n_rows / t_ours:.2f} rows/s, "
                      f"{t_ours:.1f}s"),
          ("transformers", f"{tps['peer']:.1f} tokens/s, {n_rows / t_peer:.2f} rows/s, "
                           f"{t_peer:.1f}s"),
          ("rows with identical tokens", f"{agree:.3f}")]
  for name, r in off.items():
    rows.append((f"  {SWITCHES[name]} {'on' if r['value'] else 'off'}"
                 + (f" (k={r['value']})" if name == "speculate" and r["value"] else ""),
                 f"{r['tokens_per_s']:.1f} tokens/s ({r['tokens_per_s'] / tps['project']:.2f}x "
                 f"of all defaults), agreement {r['agreement']:.3f}"))
  return report(
      "generate_useful_tokens_per_s", tps["project"], tps["peer"],
      {"agreement": agree, "rows": n_rows, "sentences": sentences, "batch": batch,
       "max_new_tokens": max_new_tokens, "dtype": "float32",
       "rows_per_s": {"project": n_rows / t_ours, "peer": n_rows / t_peer},
       "seconds": {"project": t_ours, "peer": t_peer},
       "engine": {"continuous_batching": cfg.continuous_batching,
                  "prefix_cache": cfg.prefix_cache, "speculate": generate.speculate_k(cfg),
                  **dict(engine.stats)},
       "output_length_histogram": {str(k): v for k, v in sorted(lengths.items())},
       "ablation": off, "torch_threads": torch.get_num_threads()}, rows, json_path,
      model_cfg=loaded.model.cfg, kernel_rows=batch)
