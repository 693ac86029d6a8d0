"""One process of the 2-process input test (run by test_prepare.py): prepares (one process
builds, the other waits on the lock), then reads its share of brd_corpus_only one row a step."""
import json
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

from brd_jax import sharding, tokenizer  # noqa: E402
from brd_jax.data import tasks  # noqa: E402
from brd_jax.data.config import DataConfig  # noqa: E402
from brd_jax.data.prepare import read_manifest  # noqa: E402
from brd_jax.training import loop  # noqa: E402


def main(pars, led, prepared, out):
  assert sharding.initialize() is True and jax.process_count() == 2
  cfg = DataConfig(paragraphs_dir=pars, ledger_dir=led, prepared_dir=prepared,
                   mixture="brd_corpus_only", pack=False, seq_len=512, shard_paragraphs=7)
  reg = tasks.register(tokenizer.byte_level(), cfg)
  feed = tasks.dataset(reg, 2, cfg)  # one row a host
  info = read_manifest(reg.prepared)["tasks"]["brd_ori"]
  mine = sum(n for f, n in zip(info["shards"], info["counts"])
             if str(reg.prepared / "brd_ori" / f) in feed.opened)
  rows = [next(feed)["decoder_target_tokens"][0] for _ in range(mine)]
  states = loop._gather_text(feed.state())  # pylint: disable=protected-access
  json.dump({"opened": feed.opened, "examples": [r[r > 0].tolist() for r in rows],
             "states": states, "own": feed.state()}, open(out, "w"))


if __name__ == "__main__":
  main(*sys.argv[1:])
