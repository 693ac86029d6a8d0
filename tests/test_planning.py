"""`brd plan`: topologies, exact state bytes, analytic memory against real TPU compiles, exit 2
when a plan does not fit, and the launch scripts' per-worker dry runs."""
import json
import os
import re
import subprocess

import pytest

from cli_run import ROOT, brd
from brd_jax.errors import UserError
from brd_jax.planning import estimate, topology


# A small llama whose every dimension splits over 8 devices; the TPU compile takes ~30 s here.
SMALL = """
include 'models/llama_tiny.gin'
include 'meshes/fsdp.gin'
model.vocab_size = 32000
model.d_model = 1024
model.n_layers = 4
model.n_heads = 8
model.n_kv_heads = 8
model.head_dim = 128
model.d_ff = 4096
model.remat = 'dots_no_batch'
model.param_dtype = 'bfloat16'
student.init = 'scratch'
student.dtype = 'bfloat16'
data.seq_len = 1024
train.batch_size = 16
generate.batch_size = 32
generate.max_new_tokens = 64
plan.prompt_tokens = 200
plan.eval_len = 1024
"""


def test_topologies_know_chips_hosts_and_hbm():
  t = topology.get("v5e-64")
  assert (t.chips, t.hosts, t.chips_per_host, t.aot_name) == (64, 16, 4, "v5e:8x8")
  t = topology.get("v4-32")  # v4 names count cores: 16 megacore chips on 4 hosts
  assert (t.chips, t.hosts, t.aot_name, t.chip_config) == (16, 4, "v4:2x2x4", "megacore")
  assert topology.get("v5p-8").chips == 4 and topology.get("v5e-8").hosts == 1
  assert topology.host(topology.get("v5e-64")).aot_name == "v5e:2x2"
  h = topology.get("h100x8")
  assert (h.platform, h.chips, h.hosts) == ("cuda", 8, 1)
  for bad in ("v5e-63", "tpu9-8", "h100xq"):
    with pytest.raises(UserError):
      topology.get(bad)


def test_gpu_plans_check_against_the_memory_jax_may_take(monkeypatch):
  """JAX takes a fraction of GPU memory; the plan uses the one launch/gpu.sh exports."""
  for var in ("XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION"):
    monkeypatch.delenv(var, raising=False)
  whole = 84_929_347_584  # device_memory_size in h100_sxm.txtpb
  assert str(whole) in (ROOT / "brd_jax/planning/h100_sxm.txtpb").read_text()
  assert topology.get("h100x8").hbm_bytes == int(whole * 0.9)
  r = subprocess.run([f"{ROOT}/launch/gpu.sh", "--dry-run", "--", "brd", "plan"],
                     capture_output=True, text=True, check=True, env={
                         k: v for k, v in os.environ.items() if "MEM_FRACTION" not in k})
  assert "XLA_CLIENT_MEM_FRACTION=0.9 " in r.stdout
  monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
  assert topology.get("h100x8").hbm_bytes == whole // 2
  assert topology.get("v5e-8").hbm_bytes == int(15.75 * 2 ** 30)  # TPUs: the whole HBM
  monkeypatch.setenv("XLA_CLIENT_MEM_FRACTION", "2")
  with pytest.raises(UserError, match="XLA_CLIENT_MEM_FRACTION"):
    topology.get("h100x8")


def test_state_bytes_are_the_parameter_count_split_over_fsdp():
  """The exact part of the plan, against ModelConfig.num_params (independent code)."""
  from brd_jax.models.config import named_config
  from brd_jax.training import step as step_lib
  from brd_jax.training.config import TrainConfig
  cfg = named_config("llama_tiny").replace(d_model=256, d_ff=512, vocab_size=4096, n_layers=2)
  mesh = estimate.abstract_mesh((1, 8, 1))
  state, *_ = step_lib.abstract_train(cfg, TrainConfig(), mesh)
  assert estimate.shard_bytes(state["params"]) == cfg.num_params() * 4 // 8
  # Adam's two moments per parameter, plus scalar counts replicated on every device.
  assert 0 <= estimate.shard_bytes(state["opt"]) - 2 * cfg.num_params() * 4 // 8 < 64


@pytest.fixture(scope="module")
def small_plan(tmp_path_factory):
  """One `brd plan --aot` of SMALL on a v5e-8 topology (real TPU compiles via libtpu)."""
  d = tmp_path_factory.mktemp("plan")
  (d / "small.gin").write_text(SMALL)
  # The teacher: an HF directory holding only config.json (the plan reads shapes, not weights).
  (d / "teacher").mkdir()
  (d / "teacher" / "config.json").write_text(json.dumps({
      "model_type": "llama", "vocab_size": 32000, "hidden_size": 1024, "num_hidden_layers": 4,
      "num_attention_heads": 8, "num_key_value_heads": 8, "intermediate_size": 4096,
      "max_position_embeddings": 2048, "rms_norm_eps": 1e-5}))
  r = brd("plan", "--gin_file", d / "small.gin", "--gin", f"generate.teacher='{d / 'teacher'}'",
          "--gin", "generate.dtype='bfloat16'", "--topology", "v5e-8", "--aot",
          "--out", d / "plan.json", env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  return json.loads((d / "plan.json").read_text()), r.stdout


@pytest.mark.slow
def test_tpu_compiles_agree_with_the_analytic_memory(small_plan):
  plan, text = small_plan
  stages = {s["stage"]: s for s in plan["stages"]}
  assert set(stages) == {"generate", "train", "eval"}
  compiled = {c["what"]: c for s in plan["stages"] for c in s["compiled"]}
  assert set(compiled) == {"train step", "generate prefix", "generate insert", "generate steps",
                           "eval score"}
  for what in ("train step", "eval score", "generate prefix", "generate insert",
               "generate steps"):
    c = compiled[what]
    assert c["peak_bytes"] > 0 and not c["error"], c
    assert abs(c["analytic_bytes"] - c["peak_bytes"]) <= 0.15 * c["peak_bytes"], (what, c)
  assert "compiled train step" in text and "fits" in text
  assert stages["generate"]["model"].startswith("llama 0.") and stages["generate"]["mesh"] == {
      "data": 1, "fsdp": 8, "tensor": 1}


def test_plan_that_does_not_fit_is_one_line_and_exit_2(tmp_path):
  (tmp_path / "big.gin").write_text(SMALL + "train.batch_size = 4096\n")
  r = brd("plan", "--gin_file", tmp_path / "big.gin", "--gin", "plan.stages=('train',)",
          "--topology", "v5e-8", "--out", tmp_path / "p.json")
  assert r.returncode == 2, r.stderr[-2000:]
  lines = [l for l in r.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("brd plan: error: does not fit: needs "), lines
  assert lines[0].endswith("GiB of 15.75 GiB HBM on v5e-8 (train)")
  needs = float(lines[0].split("needs ")[1].split(" GiB")[0])
  assert needs > 15.75
  assert not json.loads((tmp_path / "p.json").read_text())["stages"][0]["fits"]


@pytest.mark.slow
def test_compiler_refusal_is_the_same_one_line(tmp_path):
  """With --aot the TPU compiler's out-of-memory refusal decides, and ends the same way."""
  (tmp_path / "big.gin").write_text(SMALL + "train.batch_size = 1024\n")
  r = brd("plan", "--gin_file", tmp_path / "big.gin", "--gin", "plan.stages=('train',)",
          "--topology", "v5e-8", "--aot", env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert r.returncode == 2, r.stderr[-3000:]
  last = [l for l in r.stderr.splitlines() if l.strip()][-1]
  assert "does not fit: needs" in last and "HBM on v5e-8 (train)" in last
  assert "refused: needs" in r.stdout


def test_paper_configs_plan_on_their_topologies():
  r = brd("plan", "--gin_file", "experiments/paper_blind")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "plan for v5e-64" in r.stdout and r.stdout.count("fits:") == 3
  assert "llama 13.02B (bfloat16)" in r.stdout and "xglm 0.564B" in r.stdout
  r = brd("plan", "--gin_file", "experiments/paper_blind", "--gin", "generate.batch_size=128")
  assert r.returncode == 2 and "(generate)" in r.stderr
  r = brd("plan", "--gin_file", "experiments/paper_blind", "--topology", "v5e-63")
  assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_launch_dry_runs_give_every_worker_the_same_command():
  gin = ["--gin_file", "experiments/paper_blind", "--gin_file", "meshes/v5e_64.gin"]
  r = subprocess.run([f"{ROOT}/launch/tpu_vm.sh", "--dry-run", "--tpu", "t", "--zone", "z",
                      "--workers", "16", "--", "brd", "pipeline", "--workdir", "/mnt/brd", *gin],
                     capture_output=True, text=True, check=True)
  ssh = [l for l in r.stdout.splitlines() if " ssh " in l]
  assert [l.split("--worker=")[1].split()[0] for l in ssh] == [str(i) for i in range(16)]
  tails = {l.split("--command", 1)[1] for l in ssh}
  assert len(tails) == 1 and "experiments/paper_blind" in tails.pop()
  r = subprocess.run([f"{ROOT}/launch/gpu.sh", "--dry-run", "--hosts", "g0,g1,g2", "--", "brd",
                      "train", "--workdir", "/mnt/w", *gin], capture_output=True, text=True,
                     check=True)
  lines = r.stdout.strip().splitlines()
  assert len(lines) == 3
  ids = [re.search(r"BRD_PROCESS_ID=(\d+)", l) for l in lines]
  assert [m.group(1) for m in ids] == ["0", "1", "2"]
  assert all("BRD_COORDINATOR=g0:" in l and "BRD_NUM_PROCESSES=3" in l for l in lines)
  assert len({l[m.end():].rstrip("\\ ") for l, m in zip(lines, ids)}) == 1  # same command
  assert "experiments/paper_blind" in lines[0] and "meshes/v5e_64.gin" in lines[0]
  r = subprocess.run([f"{ROOT}/launch/tpu_vm.sh", "--dry-run", "--tpu", "t", "--zone", "z",
                      "--workers", "x", "--", "brd"], capture_output=True, text=True)
  assert r.returncode == 2 and "--workers" in r.stderr


def test_teacher_roofline_by_hand_and_what_the_switches_change():
  """One decode step by hand: a memory-bound step reads the weights and the live KV once."""
  from brd_jax import models
  from brd_jax.planning import teacher
  cfg = models.named_config("vicuna_13b")
  n, kvb = cfg.num_params(), teacher.kv_bytes_per_token(cfg)
  assert kvb == 2 * 40 * 40 * 128 * 2                      # k and v, 40 layers x 5120, bf16
  w = teacher.Workload(preamble=300, own=40, mean_out=50, max_out=160, tokens_per_step=1.9, k=4)
  chip = dict(chips=4, hbm_bytes=15.75 * 2 ** 30, peak_flops=197e12, bandwidth=819e9)
  on = teacher.replica(cfg, w, **chip, continuous=True, prefix=True, speculate=False)
  step = (2 * n + 300 * kvb + on["batch"] * (40 + 25) * kvb) / (4 * 819e9)
  prefill = 2 * n * 40 / (4 * 197e12 * 0.4)
  assert on["step_ms"] == pytest.approx(step * 1e3, rel=1e-9)
  assert on["units_per_s"] == pytest.approx(1 / (step * 50 / on["batch"] + prefill), rel=1e-9)
  # Without the prefix cache a row holds its preamble's keys too: fewer rows fit.
  off = teacher.replica(cfg, w, **chip, continuous=False, prefix=False, speculate=False)
  assert off["batch"] < on["batch"] and off["units_per_s"] < on["units_per_s"] / 3
  # The batch: the largest power of two whose rows' KV, held twice by the decode loop, fits
  # beside the weights and the preamble in 90% of HBM.
  free = 4 * 15.75 * 2 ** 30 * 0.9 - 2 * n - 300 * kvb
  assert 2 * on["batch"] * (40 + 160) * kvb <= free < 4 * on["batch"] * (40 + 160) * kvb
  # Speculation's verify steps turn compute-bound past some batch: where memory does not limit
  # the batch (v5p's 95.74 GiB chips), it picks a smaller one.
  big = dict(chip, hbm_bytes=95.74 * 2 ** 30, peak_flops=459e12, bandwidth=2765e9)
  plain = teacher.replica(cfg, w, **big, continuous=True, prefix=True, speculate=False)
  spec = teacher.replica(cfg, w, **big, continuous=True, prefix=True, speculate=True)
  assert spec["batch"] < plain["batch"] and spec["bound"] == "compute"
  r = brd("plan", "--gin_file", "experiments/paper_blind", "--gin", "plan.stages=('generate',)")
  assert r.returncode == 0 and "engine: continuous batching + prefix cache" in r.stdout
