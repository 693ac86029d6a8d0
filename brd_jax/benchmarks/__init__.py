"""`brd bench ...`: the project against a peer measured in the same run, one shared output shape."""
from __future__ import annotations

import json

from brd_jax.io_utils import atomic_write_text


def report(metric: str, project: float, peer: float, extra: dict, rows: list[tuple[str, str]],
           json_path: str | None = None) -> dict:
  """Prints a table and optionally writes {"metric", "project", "peer", "ratio", ...} to JSON."""
  result = {"metric": metric, "project": project, "peer": peer,
            "ratio": project / peer if peer else float("inf"), **extra}
  width = max(len(k) for k, _ in rows + [("ratio", "")])
  print()
  for k, v in rows + [("ratio (project / peer)", f"{result['ratio']:.2f}x")]:
    print(f"  {k:<{max(width, 22)}}  {v}")
  print()
  if json_path:
    atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
  return result

