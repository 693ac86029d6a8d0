"""`brd bench WHAT`'s dispatch to the benchmark modules (each imported only when chosen)."""
from __future__ import annotations


def run(what: str, o: dict) -> None:
  """`brd bench WHAT`: o holds the command's flags (unset ones are None)."""
  out = o["out"]
  if what == "generate":
    from brd_jax.benchmarks import generate
    generate.run(o["model"], sentences=o["sentences"], batch=o["batch_size"] or 32,
                 max_new_tokens=o["max_new_tokens"], ablation=not o["no_ablation"], json_path=out)
  elif what == "decode":
    from brd_jax.benchmarks import decode
    decode.run(o["model"], batch=o["batch_size"] or 32, repeats=o["repeats"],
               dtype=o["dtype"] or "float32", json_path=out)
  elif what == "train":
    from brd_jax.benchmarks import train
    train.run(o["model"], batch=o["batch_size"], seq_len=o["seq_len"], steps=o["steps"],
              dtype=o["dtype"] or "float32", remat=o["remat"], json_path=out)
  elif what == "corpus":
    from brd_jax.benchmarks import corpus
    corpus.run(o["mb"], o["processes"], json_path=out)
  elif what == "data":
    from brd_jax.benchmarks import data
    data.run(o["readings"], o["hosts"], o["batches"], o["model"], json_path=out)
  elif what == "split":
    from brd_jax.benchmarks import split
    split.run(o["input"], json_path=out)
  else:
    from brd_jax.benchmarks import eval as eval_bench
    tasks = tuple(t.strip() for t in (o["tasks"] or "").split(",") if t.strip())
    eval_bench.run(o["model"], tasks or tuple(eval_bench.LM_EVAL), o["data_dir"],
                   o["limit"] or None, peer_batch=o["batch_size"] or 8, json_path=out)
