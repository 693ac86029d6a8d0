"""The kernel ceiling every `brd bench` JSON carries (brd_jax/benchmarks/ceiling.py)."""
import json

import pytest

from brd_jax.benchmarks import ceiling, report
from brd_jax.models.config import ModelConfig


def test_kernel_ratio_is_the_flop_weighted_time_ratio():
  rows = [{"shape": [1000, 1000, 1000], "dtype": "float32", "xla_gflops": 100.0,
           "torch_gflops": 200.0},   # 2 GFLOP: XLA 0.02 s, torch 0.01 s
          {"shape": [1000, 1000, 3000], "dtype": "float32", "xla_gflops": 200.0,
           "torch_gflops": 200.0},   # 6 GFLOP: 0.03 s each
          {"shape": [10, 10, 10], "dtype": "bfloat16", "xla_gflops": 1.0, "torch_gflops": 4.0}]
  assert ceiling.kernel_ratio(rows, "float32") == pytest.approx(0.04 / 0.05)
  assert ceiling.kernel_ratio(rows, "bfloat16") == pytest.approx(0.25)
  assert ceiling.kernel_ratio(rows, "float16") is None


def test_report_carries_the_ceiling_measured_on_the_models_shapes(tmp_path, capsys):
  cfg = ModelConfig(vocab_size=512, d_model=64, n_heads=4, n_kv_heads=2, head_dim=16, d_ff=96)
  assert ceiling.shapes(cfg, 8) == [("qkv", 8, 64, 128), ("out", 8, 64, 64),
                                    ("mlp_up", 8, 64, 192), ("mlp_down", 8, 96, 64),
                                    ("vocab", 8, 64, 512)]
  out = report("x_per_s", 3.0, 2.0, {}, [("model", "tiny")], str(tmp_path / "r.json"),
               model_cfg=cfg, kernel_rows=8)
  saved = json.loads((tmp_path / "r.json").read_text())
  c = saved["ceiling"]
  assert saved == json.loads(json.dumps(out))
  assert [(m["name"], m["dtype"]) for m in c["matmuls"]] == [
      (n, d) for n, *_ in ceiling.shapes(cfg, 8) for d in ("float32", "bfloat16")]
  assert all(m["xla_gflops"] > 0 and m["torch_gflops"] > 0 for m in c["matmuls"])
  assert c["kernel_ratio"] == c["kernel_ratio_fp32"] == ceiling.kernel_ratio(c["matmuls"],
                                                                             "float32")
  assert c["beyond_kernels"] == pytest.approx(1.5 / c["kernel_ratio"], rel=1e-2)
  flags = open("/proc/cpuinfo").read()
  assert ("avx512f" in c["cpu"]["extensions"]) == (" avx512f" in flags)
  printed = capsys.readouterr().out
  assert "ratio / kernel ratio" in printed and "kernel ratio XLA/torch" in printed
  # a bench without a model (corpus, split): the CPU, no kernel figures
  plain = report("mb_per_s", 1.0, 1.0, {}, [], None)["ceiling"]
  assert "kernel_ratio" not in plain and plain["cpu"]["cores"] >= 1
