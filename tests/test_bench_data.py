"""`brd bench data` on a tiny synthetic ledger: every figure is there, its records are keyed as
`brd generate` keys them (the restart finds every unit done), and resume reads the saved state."""
import json

import pytest

from brd_jax.benchmarks import data as bench

pytestmark = pytest.mark.slow


def test_bench_data_measures_both_paths_and_its_ledger_is_generates(tmp_path, monkeypatch):
  from brd_jax import tokenizer
  from brd_jax.checkpoints import resolve
  monkeypatch.setattr(resolve, "load_tokenizer", lambda spec: tokenizer.byte_level())
  r = bench.run(readings=300, hosts=2, batches=12, json_path=str(tmp_path / "out.json"))
  assert json.loads((tmp_path / "out.json").read_text())["ratio"] == r["ratio"] > 0
  for name in ("text", "kd"):
    e = r[name]
    assert e["examples"] == {"brd_ori": 30, "brd_ner": 30, "brd_qra": 30, "brd_skd": 0}
    assert e["generate_restart_units"] == 300 and e["generate_restart_remaining"] == 0
    assert e["tokens_per_s"] > 0 and 0.5 < e["fill"] <= 1
    assert e["resume_step_10_s"] > 0 and e["resume_step_12_s"] > 0
    assert e["host_peak_rss_mb"] > 0 and e["prepare_s"] > 0
  assert r["seqio_cache_peer"]["tokens_per_s"] > 0
