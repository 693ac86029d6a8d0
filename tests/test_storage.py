"""Workdirs on object storage: `brd pipeline --workdir gs://...` against a local GCS emulator
(gcp-storage-emulator), reached the way a pod reaches GCS: gcsfs for the project's own files,
Orbax (epath + tensorstore) for checkpoints, tensorboardX's client for event files."""
import json
import os
import socket
import threading

import pytest

from cli_run import ROOT, brd
from test_pipeline import tiny_setup  # noqa: F401  (the same tiny pipeline, its fixture)

from brd_jax import io_utils


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  """A GCS emulator on localhost with bucket `brd`; the environment every client needs for it."""
  from gcp_storage_emulator.server import create_server
  port = _free_port()
  server = create_server("localhost", port, in_memory=True, default_bucket="brd")
  threading.Thread(target=server.start, daemon=True).start()
  url = f"http://localhost:{port}"
  env = {"STORAGE_EMULATOR_HOST": url,            # gcsfs and google-cloud-storage
         "TENSORSTORE_GCS_HTTP_URL": url,         # Orbax's array writes
         "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
         "EPATH_USE_TF": "false",                 # Orbax's paths through fsspec, not tf.io.gfile
         "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}  # no gRPC bucket-type probe
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  yield env
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v
  server.stop()


def _objects(prefix: str) -> dict[str, int]:
  import fsspec
  fs = fsspec.filesystem("gs", skip_instance_cache=True)
  return {p[len(prefix):].lstrip("/"): fs.size(p) for p in fs.find(prefix)}


def test_local_and_url_paths_are_told_apart():
  assert io_utils.is_url("gs://b/run") and not io_utils.is_url("/tmp/gs:/b")
  p = io_utils.as_path("gs://b/run") / "ledger"
  assert str(p) == "gs://b/run/ledger"  # pathlib would have made it gs:/b/run/ledger
  assert io_utils.as_path("rel/dir").__class__.__module__ == "pathlib"


@pytest.mark.slow
def test_pipeline_with_its_workdir_on_gcs_resumes_and_writes_nothing_locally(
    tiny_setup, gcs, tmp_path):  # noqa: F811
  _, tiny = tiny_setup
  gin = tmp_path / "gcs.gin"  # the emulator lacks the conditional writes OCDBT commits with
  gin.write_text(f"include '{tiny}'\ntrain.checkpoint_ocdbt = False\n")
  before = set(os.listdir(tmp_path))  # (gcs.gin)
  r = brd("pipeline", "--workdir", "gs://brd/run", "--gin_file", gin, "--no_progress",
          cwd=tmp_path)
  assert r.returncode == 0, r.stderr[-4000:]
  objs = _objects("brd/run")
  assert set(os.listdir(tmp_path)) == before  # no stray gs:/ directory from a mangled path
  for key in ("corpus/paragraphs/manifest.json", "corpus/paragraphs/shard-00000.jsonl",
              "ledger/manifest.json", "stages/generate.json", "stages/eval_student_brd.json",
              "train_brd/metrics.jsonl", "train_brd/tokenizer/.complete",
              "eval/student_brd/results.json", "report.md", "config.gin"):
    assert key in objs, key
  assert any(k.startswith("ledger/shard-p0000-") for k in objs)
  assert any(k.startswith("train_brd/checkpoints/4/") for k in objs)  # Orbax wrote to GCS
  import fsspec
  fs = fsspec.filesystem("gs", skip_instance_cache=True)
  metrics = [json.loads(l) for l in fs.cat("brd/run/train_brd/metrics.jsonl").decode().splitlines()]
  assert metrics[0]["event"] == "start" and [m["step"] for m in metrics[1:]] == [1, 2, 3, 4]
  stages = {k: json.loads(fs.cat(f"brd/run/stages/{k}.json"))["seconds"]
            for k in ("corpus", "generate", "train_brd")}

  # A rerun finds every stage done there, and the trained student loads from GCS for eval.
  r = brd("pipeline", "--workdir", "gs://brd/run", "--gin_file", gin, "--no_progress",
          cwd=tmp_path)
  assert r.returncode == 0, r.stderr[-4000:]
  assert r.stdout.count(": up to date") == 8, r.stdout
  assert {k: json.loads(fs.cat(f"brd/run/stages/{k}.json"))["seconds"] for k in stages} == stages
  r = brd("eval", "--model", "gs://brd/run/train_brd", "--out", "gs://brd/eval2",
          "--gin_file", gin, "--no_progress", cwd=tmp_path)
  assert r.returncode == 0, r.stderr[-4000:]
  a = json.loads(fs.cat("brd/run/eval/student_brd/results.json"))["tasks"]
  b = json.loads(fs.cat("brd/eval2/results.json"))["tasks"]
  assert {t: v["acc"] for t, v in a.items()} == {t: v["acc"] for t, v in b.items()}


def test_corpus_shared_by_three_processes_on_gcs_equals_one_local_process(gcs, tmp_path):
  """No locks or renames on an object store: process 0 merges once every share is done."""
  import dataclasses
  import random
  from brd_jax.corpus import paragraphs, stage
  from test_corpus import cfg_for, outputs, paragraph
  rng = random.Random(2)
  src = tmp_path / "in"
  src.mkdir()
  for f in range(2):
    docs = ["\n".join(paragraph(rng) for _ in range(3)) for _ in range(12)]
    (src / f"in{f}.txt").write_text("\n\n".join(docs) + "\n")
  one = dataclasses.replace(cfg_for([src], chunk_docs=4), merge_wait_s=0, shard_paragraphs=4)
  stage.run(one, tmp_path / "local", progress=False)
  three = [dataclasses.replace(one, num_processes=3, process_index=i) for i in range(3)]
  s = stage.run(three[0], "gs://brd/corpus3", progress=False)  # alone: does not wait forever
  assert s == {"status": "share done", "process": 0, "waiting_for": [1, 2]}
  for cfg in three[1:]:  # the others never merge
    assert stage.run(cfg, "gs://brd/corpus3", progress=False)["status"] == "share done"
  assert stage.read_manifest("gs://brd/corpus3") is None
  assert stage.run(three[0], "gs://brd/corpus3", progress=False)["status"] == "written"
  want = outputs(tmp_path / "local")
  got = [json.loads(l) for p in paragraphs.paragraph_shards("gs://brd/corpus3/paragraphs")
         for l in p.read_text().splitlines()]
  assert [r["id"] for r in got] == [r["id"] for r in want] and len(want) > 20
  assert not any(k.startswith("parts/") for k in _objects("brd/corpus3"))
  assert sum(k.endswith(".jsonl") for k in _objects("brd/corpus3")) > 5
  # other settings: the corpus is replaced as a whole, no shard of the old one survives
  fewer = dataclasses.replace(one, max_paragraphs=5, shard_paragraphs=2)
  assert stage.run(fewer, "gs://brd/corpus3", progress=False)["status"] == "written"
  shards = sorted(k for k in _objects("brd/corpus3") if k.endswith(".jsonl"))
  assert shards == [f"paragraphs/shard-0000{i}.jsonl" for i in range(3)]


def test_a_beam_build_reads_and_writes_gcs_and_equals_the_local_build(gcs, tmp_path):
  """Inputs and prepared root on gs://: the shards (written in place, manifest last) are the
  bytes a local build of the same files writes, under the same fingerprint."""
  import brd_corpus
  from brd_jax import tokenizer
  from brd_jax.data import prepare, prepare_beam
  from brd_jax.data.config import DataConfig
  pars, led = brd_corpus.make(tmp_path, n_paragraphs=30)
  for d in (pars, led):
    io_utils.upload_dir(d, f"gs://brd/beam/{d.name}")
  kw = dict(seq_len=128, shard_paragraphs=8)
  local = prepare.prepare(DataConfig(paragraphs_dir=str(pars), ledger_dir=str(led), **kw),
                          tokenizer.byte_level(), False, tmp_path / "local", progress=False)
  cfg = DataConfig(paragraphs_dir="gs://brd/beam/paragraphs", ledger_dir="gs://brd/beam/ledger",
                   **kw)
  built = prepare_beam.build(cfg, "bytes", False, "gs://brd/beam/prepared", [])
  assert str(built) == f"gs://brd/beam/prepared/{local.name}"
  got = _objects(f"brd/beam/prepared/{local.name}")
  shards = sorted(str(p.relative_to(local)) for p in local.rglob("*.array_record"))
  assert sorted(got) == sorted(shards + [prepare.MANIFEST]) and len(shards) == 4 * 4
  for f in shards:
    assert (built / f).read_bytes() == (local / f).read_bytes(), f
  assert prepare.read_manifest(built)["tasks"] == prepare.read_manifest(local)["tasks"]
