"""`brd bench ...`: the project against a peer measured in the same run, one shared output shape."""
from __future__ import annotations

import json

from brd_jax.io_utils import atomic_write_text


def report(metric: str, project: float, peer: float, extra: dict, rows: list[tuple[str, str]],
           json_path: str | None = None, model_cfg=None, kernel_rows: int = 0,
           dtype: str = "float32") -> dict:
  """Prints a table and optionally writes {"metric", "project", "peer", "ratio", ...,
  "ceiling"} to JSON. The ceiling (`ceiling.block`) is measured here, after both sides ran:
  the model's matmuls at `kernel_rows` rows when `model_cfg` is given, the CPU always."""
  from brd_jax.benchmarks import ceiling
  result = {"metric": metric, "project": project, "peer": peer,
            "ratio": project / peer if peer else float("inf"), **extra}
  ceil = ceiling.block(model_cfg, kernel_rows, dtype)
  if "kernel_ratio" in ceil:
    ceil["beyond_kernels"] = ceiling.sig(result["ratio"] / ceil["kernel_ratio"])
  result["ceiling"] = ceil
  rows = rows + [("ratio (project / peer)", f"{result['ratio']:.2f}x")] + \
      ceiling.rows_of(ceil, result["ratio"])
  width = max(len(k) for k, _ in rows)
  print()
  for k, v in rows:
    print(f"  {k:<{max(width, 22)}}  {v}")
  print()
  if json_path:
    atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
  return result

