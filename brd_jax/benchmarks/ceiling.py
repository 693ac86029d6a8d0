"""The kernel ceiling a bench ran under: XLA's and torch's matmul throughput on the model's own
shapes (fp32 and bf16), measured in the same run, with the CPU's vector extensions and threads.

An end-to-end ratio of 0.98x means little alone: on a machine where XLA's fp32 dot runs at 0.8x
torch's, the project gains 1.2x beyond the kernels; on one where it runs at 1.3x, it loses. So
every model bench divides its ratio by the kernel ratio (`beyond_kernels`).
"""
from __future__ import annotations

import os
import platform
import statistics
import time

_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16",
          "amx_int8")


def cpu() -> dict:
  """The CPU's model, cores and the vector / matrix extensions the kernels could use."""
  model, flags = platform.processor(), set()
  try:
    for line in open("/proc/cpuinfo", encoding="utf-8"):
      key, _, value = line.partition(":")
      if key.strip() == "model name":
        model = value.strip()
      elif key.strip() == "flags":
        flags = set(value.split())
        break
  except OSError:
    pass
  return {"model": model, "cores": os.cpu_count(), "extensions": [f for f in _FLAGS if f in flags]}


def shapes(cfg, rows: int) -> list[tuple[str, int, int, int]]:
  """(name, M, K, N) of the model's matmuls for `rows` tokens at once."""
  d, hd = cfg.d_model, cfg.head_dim
  qkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * hd
  ff = cfg.d_ff * (2 if cfg.gated_mlp else 1)
  return [("qkv", rows, d, qkv), ("out", rows, cfg.n_heads * hd, d), ("mlp_up", rows, d, ff),
          ("mlp_down", rows, cfg.d_ff, d), ("vocab", rows, d, cfg.vocab_size)]


def _time(fn, min_s: float = 0.2) -> float:
  fn()  # warm-up (and compilation)
  times, start = [], time.perf_counter()
  while len(times) < 3 or time.perf_counter() - start < min_s:
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
    if len(times) >= 50:
      break
  return statistics.median(times)


def matmuls(shape_list, dtypes=("float32", "bfloat16")) -> list[dict]:
  """GFLOP/s of XLA's dot as the models take it (`layers.matmul`) and of `torch.matmul`, per shape
  and dtype (torch on its default threads, XLA on its own thread pool); in bf16 also XLA's plain
  `a @ b` (`xla_plain_gflops`), which XLA:CPU upcasts to fp32."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  from brd_jax.models import layers
  out = []
  rng = np.random.default_rng(0)
  dot = jax.jit(layers.matmul)
  plain = jax.jit(lambda a, b: a @ b)
  for name, m, k, n in shape_list:
    a32, b32 = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    for dt in dtypes:
      ja, jb = jnp.asarray(a32, dt), jnp.asarray(b32, dt)
      ta = torch.from_numpy(a32).to(getattr(torch, dt))
      tb = torch.from_numpy(b32).to(getattr(torch, dt))
      flops = 2 * m * k * n
      xla = _time(lambda: dot(ja, jb).block_until_ready())
      with torch.no_grad():
        tor = _time(lambda: torch.matmul(ta, tb))
      out.append({"name": name, "shape": [m, k, n], "dtype": dt,
                  "xla_gflops": sig(flops / xla / 1e9),
                  "torch_gflops": sig(flops / tor / 1e9)})
      if dt == "bfloat16":
        out[-1]["xla_plain_gflops"] = sig(
            flops / _time(lambda: plain(ja, jb).block_until_ready()) / 1e9)
  return out


def kernel_ratio(rows: list[dict], dtype: str) -> float | None:
  """XLA / torch over the shapes, weighted by their FLOPs (total time ratio)."""
  sel = [r for r in rows if r["dtype"] == dtype]
  if not sel:
    return None
  flops = [2 * r["shape"][0] * r["shape"][1] * r["shape"][2] for r in sel]
  t_xla = sum(f / r["xla_gflops"] for f, r in zip(flops, sel))
  t_torch = sum(f / r["torch_gflops"] for f, r in zip(flops, sel))
  return sig(t_torch / t_xla)


def sig(x: float) -> float:
  """Four significant digits: a tiny shape's GFLOP/s must not round to 0 (ratios divide by it)."""
  return float(f"{x:.4g}")


def block(cfg=None, rows: int = 0, dtype: str = "float32") -> dict:
  """The ceiling block of a bench's JSON; `cfg` None: no model (a corpus bench), CPU only."""
  try:
    import torch
    threads = torch.get_num_threads()
  except ImportError:  # a bench without a torch peer (corpus, split)
    threads = None
  out = {"cpu": cpu(), "torch_threads": threads,
         "xla_flags": os.environ.get("XLA_FLAGS", ""), "bench_dtype": dtype}
  if cfg is not None:
    mm = matmuls(shapes(cfg, rows))
    out.update(rows=rows, matmuls=mm, kernel_ratio_fp32=kernel_ratio(mm, "float32"),
               kernel_ratio_bf16=kernel_ratio(mm, "bfloat16"))
    out["kernel_ratio"] = out["kernel_ratio_bf16" if dtype == "bfloat16" else "kernel_ratio_fp32"]
  return out


def rows_of(ceil: dict, ratio: float) -> list[tuple[str, str]]:
  """The table rows a bench prints for its ceiling."""
  ext = ", ".join(ceil["cpu"]["extensions"]) or "none of " + ", ".join(_FLAGS)
  out = [("CPU", f"{ceil['cpu']['model']} ({ceil['cpu']['cores']} cores; {ext})")]
  if "kernel_ratio" in ceil:
    out += [("kernel ratio XLA/torch", f"fp32 {ceil['kernel_ratio_fp32']:.2f}x, bf16 "
                                       f"{ceil['kernel_ratio_bf16']:.2f}x (model's matmuls, "
                                       f"{ceil['rows']} rows)"),
            ("ratio / kernel ratio", f"{ratio / ceil['kernel_ratio']:.2f}x (beyond the kernels)")]
  return out
