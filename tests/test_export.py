"""`brd export`: the ledger as Parquet that HF `datasets` reads back record for record, training
texts that train exactly as the ledger does, and a dataset card with the generation's facts."""
import json
import subprocess

import numpy as np
import pytest
import yaml

from cli_run import ROOT, brd_cmd
from test_generate import expected_valid, reading_paragraphs
from brd_jax import tokenizer
from brd_jax.behaviors import generate, ledger
from brd_jax.behaviors.config import GenerateConfig
from brd_jax.data import export, tasks
from brd_jax.data.config import DataConfig
from brd_jax.errors import UserError


@pytest.fixture(scope="module")
def read_corpus(tmp_path_factory, reading_teacher):
  """8 paragraphs read by the reading teacher, two attempts: valid, invalid and retried units."""
  root = tmp_path_factory.mktemp("export")
  pars = reading_paragraphs(root / "paragraphs", 8)
  cfg = GenerateConfig(teacher=str(reading_teacher), behaviors=("ner", "qra"), max_new_tokens=48,
                       max_attempts=2, num_processes=1, process_index=0, batch_size=8)
  generate.run(cfg, pars, root / "ledger", progress=False)
  want = expected_valid(pars)
  assert 0 < sum(want.values()) < len(want)  # both outcomes in the ledger
  # an earlier generation's valid readings of three sentences (another template): training
  # prefers the manifest's, so these are in the ledger but not selected
  old = [dict(r, template="ner-old@0", unit=f"old{i}", key=f"old{i}-0", text="OLD",
              parsed=[{"entity": "OLD", "type": "x", "description": "y"}])
         for i, r in enumerate(r for r in ledger.read(root / "ledger")
                               if r["valid"] and r["behavior"] == "ner") if i < 3]
  (root / "ledger" / "shard-p0001-000000.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in old))
  return root, pars, root / "ledger"


def _export(*args):
  return subprocess.run(brd_cmd("export", "--no_progress", *args), cwd=ROOT, capture_output=True,
                        text=True)


def test_export_round_trips_every_record_through_hf_datasets(read_corpus):
  import datasets
  root, pars, led = read_corpus
  out = root / "out"
  r = _export("--paragraphs_dir", pars, "--ledger_dir", led, "--out", out)
  assert r.returncode == 0, r.stderr[-3000:]
  recs = list(ledger.read(led))
  assert any(x["valid"] for x in recs) and any(not x["valid"] for x in recs)
  rows = list(datasets.load_dataset("parquet", data_files=str(out / "readings" / "*.parquet"),
                                    split="train"))
  assert len(rows) == len(recs) == json.loads(r.stdout)["records"]
  chosen = {x["key"] for x in ledger.select(ledger.read(led), ledger.read_manifest(led)).values()}
  for row, rec in zip(rows, recs):
    assert export.record_of(row) == rec  # every field of every record comes back
    assert (row["key"], row["sentence"], row["behavior"], row["teacher_text"], row["valid"],
            row["error"]) == (rec["key"], rec["sentence"], rec["behavior"], rec["text"],
                              rec["valid"], rec["error"])
    assert row["selected"] == (rec["key"] in chosen)
    assert row["selected"] == (rec["valid"] and not rec["key"].startswith("old"))
    if rec["valid"] and rec["behavior"] == "ner":
      assert row["entities"] == rec["parsed"] and row["qa"] is None
    if rec["valid"] and rec["behavior"] == "qra":
      assert row["qa"] == rec["parsed"] and row["entities"] is None
  assert any(r["entities"] for r in rows) and any(r["qa"] for r in rows)

  by_task = tasks.examples_by_task(DataConfig(paragraphs_dir=str(pars), ledger_dir=str(led)))
  for t in ("brd_ori", "brd_ner", "brd_qra"):
    got = datasets.load_dataset("parquet", data_files=str(out / "texts" / t / "*.parquet"),
                                split="train")
    assert [dict(x) for x in got] == by_task[t] and by_task[t], t

  # the card: HF configs for every table, the generation's facts, the licence left to the user
  card = (out / "README.md").read_text()
  head = yaml.safe_load(card.split("---\n")[1])
  man = ledger.read_manifest(led)
  assert {c["config_name"] for c in head["configs"]} == {"readings", "brd_ori", "brd_ner",
                                                         "brd_qra", "brd_skd"}
  assert head["license"] == ""
  b = head["brd"]
  assert b["teacher_fingerprint"] == man["teacher"] and b["templates"] == man["templates"]
  assert b["decoding"] == man["decode"] and b["records"] == len(recs)
  assert b["keep_rates"] == {k: v["keep_rate"] for k, v in man["behaviors"].items()}
  assert b["counts"]["brd_ner"] == len(by_task["brd_ner"])
  assert b["corpus"]["paragraphs"] == 8 and (b["sep"], b["level"]) == ("\n", "paragraph")

  # the same inputs again: up to date; a folder that is not an export is never overwritten
  mtime = (out / "export.json").stat().st_mtime_ns
  assert _export("--paragraphs_dir", pars, "--ledger_dir", led, "--out", out).returncode == 0
  assert (out / "export.json").stat().st_mtime_ns == mtime
  (root / "mine").mkdir()
  (root / "mine" / "notes.txt").write_text("keep me")
  r = _export("--paragraphs_dir", pars, "--ledger_dir", led, "--out", root / "mine")
  assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
  assert "is not a brd export" in r.stderr and (root / "mine" / "notes.txt").exists()


def test_training_from_the_export_gives_the_ledgers_batches(read_corpus):
  root, pars, led = read_corpus
  out = root / "out_sentence"
  for level in ("sentence", "paragraph"):
    export.run(DataConfig(paragraphs_dir=str(pars), ledger_dir=str(led), level=level),
               out / level, progress=False)
  tok = tokenizer.byte_level()
  for level in ("sentence", "paragraph"):
    base = dict(seq_len=64, level=level, mixture="brd_mix")
    batches = []
    for cfg in (DataConfig(paragraphs_dir=str(pars), ledger_dir=str(led), **base),
                DataConfig(export_dir=str(out / level), **base)):
      reg = tasks.register(tok, cfg)
      it = tasks.dataset(reg, 4, cfg)
      batches.append([next(it) for _ in range(3)])
    for a, b in zip(*batches):
      assert a.keys() == b.keys()
      for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{level} {k}")
    assert np.any(batches[0][0]["decoder_target_tokens"])

  with pytest.raises(UserError, match="exported with"):
    tasks.examples_by_task(DataConfig(export_dir=str(out / "sentence"), level="paragraph"))
  with pytest.raises(UserError, match="top-k"):
    tasks.register(tok, DataConfig(export_dir=str(out / "paragraph")), kd=True)
  with pytest.raises(UserError, match="not a brd export"):
    tasks.check(DataConfig(export_dir=str(root)))
