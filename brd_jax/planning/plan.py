"""`brd plan`: per-device memory, FLOPs and time of each stage of a config on a target topology,
optionally proven by ahead-of-time compiles of the real steps.

Train and eval use the global mesh (gin `mesh.*` over all chips); generation shares units between
processes, so it plans one host's devices. Times assume a stated MFU for compute-bound work
(training, prefill, scoring) and HBM bandwidth for decode steps, which read every weight and the
KV cache once per token.
"""
from __future__ import annotations

import dataclasses

import gin

from brd_jax import sharding
from brd_jax.errors import UserError
from brd_jax.planning import estimate, topology
from brd_jax.planning.topology import GiB


@gin.configurable("plan")
@dataclasses.dataclass(frozen=True)
class PlanConfig:
  topology: str = "v5e-64"         # the target when --topology is not given (configs/meshes set it)
  teacher_model: str = ""          # configs/models name of the teacher's shape, when
                                   # generate.teacher is not a model on this machine
  mfu: float = 0.4                 # assumed for training, prefill and scoring
  sentences_per_paragraph: float = 5.0  # the paper: ~5M sentences from ~1M paragraphs
  prompt_tokens: int = 0           # per unit; 0: the configured templates' length / 4 chars
  own_tokens: int = 40             # of those, the unit's own (sentence + chat markup); the rest
                                   # is the behaviour's shared preamble
  mean_output_tokens: float = 50.0  # generated per unit on average (SmolLM2 on real text: 50)
  draft_tokens_per_step: float = 1.9  # tokens a row emits per verify step with 4 prompt-lookup
                                   # drafts (SmolLM2 NER + QRA on real text: 6413 tokens, 3014
                                   # of them accepted drafts)
  eval_len: int = 1024             # scoring row length planned (rows = eval.token_budget / it)
  stages: tuple = ("generate", "train", "eval")


@dataclasses.dataclass
class StagePlan:
  stage: str
  model: str
  mesh: dict
  memory: estimate.Memory
  flops_per_token: float
  tokens_per_s: float
  days: float | None
  notes: list[str] = dataclasses.field(default_factory=list)
  compiled: list = dataclasses.field(default_factory=list)
  steps: dict = dataclasses.field(default_factory=dict)  # compiled step -> its analytic Memory

  def needs(self) -> float:
    """The bytes that decide fitting: the compiler's figure when there is one."""
    figures = [c.needs_bytes or c.peak_bytes for c in self.compiled]
    return max(figures) if figures else self.memory.total


def _mesh(n_devices: int):
  shape = sharding.resolve_shape(sharding.mesh_shape(), n_devices)
  return estimate.abstract_mesh(shape), shape


def _student_shape():
  from brd_jax.checkpoints import resolve
  from brd_jax.models.config import model_config
  from brd_jax.training.config import StudentConfig
  scfg = StudentConfig()
  cfg, source = None, "gin model.*"
  if scfg.init != "scratch":
    cfg = resolve.load_config(scfg.init, scfg.overrides())
    source = scfg.init if cfg else f"gin model.* ({scfg.init} is not on this machine)"
  if cfg is None:
    cfg = model_config().replace(**scfg.overrides())
  if scfg.keep_every > 1:
    cfg = cfg.replace(n_layers=len(range(0, cfg.n_layers, scfg.keep_every)))
  return cfg, source


def _teacher_shape(pcfg: PlanConfig, gcfg):
  from brd_jax.behaviors import generate
  from brd_jax.checkpoints import resolve
  from brd_jax.models.config import named_config
  overrides = generate.teacher_overrides(gcfg) or {}
  if pcfg.teacher_model:
    return named_config(pcfg.teacher_model).replace(**overrides), pcfg.teacher_model
  cfg = resolve.load_config(gcfg.teacher, overrides) if gcfg.teacher else None
  if cfg is None:
    raise UserError(f"plan: the teacher's shape is unknown ({gcfg.teacher or 'no teacher'} is "
                    "not a model on this machine); set plan.teacher_model to a configs/models name")
  return cfg, gcfg.teacher


def prompt_tokens(gcfg, pcfg: PlanConfig) -> int:
  """Tokens of one unit's prompt: the templates' text at ~4 characters a token."""
  if pcfg.prompt_tokens:
    return pcfg.prompt_tokens
  from brd_jax.behaviors import templates
  chosen = templates.chosen(gcfg.templates, gcfg.behaviors)
  sentence = "Marie Curie moved to Paris in 1891 to study physics and mathematics at the Sorbonne."
  lengths = []
  for b in gcfg.behaviors:
    msgs = templates.get(chosen[b], b).messages(sentence, "")
    lengths.append(sum(len(m["content"]) for m in msgs) / 4 + 6 * len(msgs))
  return int(max(lengths))


def _days(seconds: float) -> float:
  return seconds / 86400


def plan_generate(topo, pcfg, aot: bool) -> StagePlan:
  """The teacher's engine (`inference.slots`) with the configured switches, one host's chips:
  memory of its three programs, and the decode roofline (`planning.teacher`) at the configured
  batch for tokens/s and days."""
  from brd_jax.behaviors import generate
  from brd_jax.behaviors.config import GenerateConfig
  from brd_jax.corpus.config import CorpusConfig
  from brd_jax.inference import slots as slots_lib
  from brd_jax.planning import teacher
  gcfg, ccfg = GenerateConfig(), CorpusConfig()
  cfg, source = _teacher_shape(pcfg, gcfg)
  mesh, shape = _mesh(topo.chips_per_host)
  B = slots_lib.slot_count(gcfg.batch_size, mesh)
  P = prompt_tokens(gcfg, pcfg)
  own = min(pcfg.own_tokens, P)
  preamble = P - own if gcfg.prefix_cache else 0
  k = generate.speculate_k(gcfg, topo.platform)
  params = _param_bytes(cfg, mesh)
  sh = slots_lib.slot_shapes(B, preamble, P - preamble, gcfg.max_new_tokens, k)
  steps = estimate.slots(cfg, params, sh, k, mesh, gcfg.topk)
  mem = max(steps.values(), key=lambda m: m.total)
  w = teacher.Workload(P - own, own, pcfg.mean_output_tokens, gcfg.max_new_tokens,
                       pcfg.draft_tokens_per_step, k)
  dtype_bytes = 2 if gcfg.dtype == "bfloat16" else 4
  r = teacher.at_batch(cfg, w, B, topo.chips_per_host, topo.peak_flops, topo.hbm_bandwidth,
                       gcfg.continuous_batching, gcfg.prefix_cache, k > 0, pcfg.mfu, dtype_bytes)
  n = cfg.num_params()
  switches = ", ".join(f"{name} {'on' if on else 'off'}" for name, on in (
      ("continuous batching", gcfg.continuous_batching), ("prefix cache", gcfg.prefix_cache)))
  notes = [f"teacher shape: {source}",
           f"{B} slots per host ({switches}, speculation k={k}); prompts of ~{P} tokens, "
           f"{preamble} of them a preamble prefilled once (bucket {sh['P']}); a slot holds "
           f"{sh['S']} tokens; " + ", ".join(f"{what.split()[-1]} {m.total / GiB:.2f} GiB"
                                             for what, m in steps.items()) + " analytic",
           f"this batch: {r['step_ms']:.1f} ms a step ({r['bound']}-bound), "
           f"{pcfg.mean_output_tokens:g} tokens per unit on average (plan.mean_output_tokens)"]
  days, units = None, 0
  if ccfg.max_paragraphs:
    units = ccfg.max_paragraphs * pcfg.sentences_per_paragraph * len(gcfg.behaviors)
    days = _days(units / (r["units_per_s"] * topo.hosts))
    notes.append(f"{units:,.0f} units ({ccfg.max_paragraphs:,} paragraphs x "
                 f"{pcfg.sentences_per_paragraph:g} sentences x {len(gcfg.behaviors)} behaviours)")
  notes.extend(_engine_notes(cfg, topo, pcfg, w, dtype_bytes, units))
  sp = StagePlan("generate", f"{cfg.family} {n / 1e9:.2f}B ({cfg.dtype})", dict(zip(
      sharding.MESH_AXES, shape)), mem, 2 * n, r["tokens_per_s"] * topo.hosts, days, notes,
      steps=steps)
  if aot:
    from brd_jax.planning import aot as aot_lib
    devices = topology.devices(topology.host(topo))
    sp.compiled = aot_lib.slot_steps(cfg, sh, gcfg.max_new_tokens, k,
                                     sharding.make_mesh(shape, devices), gcfg.topk)
  return sp


def _engine_notes(cfg, topo, pcfg, w, dtype_bytes: int, units: float) -> list[str]:
  """The decode roofline of one host at the best batch that fits, with the engine's switches and
  without (static batches of full prompts): batch, units/s and days. `w`: the plan's workload
  (`teacher.Workload`); the speculation line uses k=4 whatever the config's k."""
  from brd_jax.planning import teacher
  w = dataclasses.replace(w, k=4)
  chips = topo.chips_per_host
  out = []
  for label, on in (("engine: continuous batching + prefix cache", (True, True, False)),
                    ("engine: + speculation (k=4)", (True, True, True)),
                    ("static batches, full prompts", (False, False, False))):
    r = teacher.replica(cfg, w, chips, topo.hbm_bytes, topo.peak_flops, topo.hbm_bandwidth, *on,
                        mfu=pcfg.mfu, dtype_bytes=dtype_bytes)
    if not r["fits"]:
      out.append(f"{label}: does not fit one host")
      continue
    days = f", {_days(units / (r['units_per_s'] * topo.hosts)):.2f} days" if units else ""
    out.append(f"{label}: {r['batch']} rows, {r['step_ms']:.1f} ms a step ({r['bound']}-bound), "
               f"{r['tokens_per_s'] * topo.hosts:,.0f} useful tokens/s over {topo.hosts} "
               f"host(s){days}")
  return out


def _param_bytes(cfg, mesh) -> int:
  """Per-device bytes of a model's parameters in their shardings (exact)."""
  import jax
  from brd_jax.models import build
  shardings = build.param_shardings(cfg, mesh)
  return estimate.shard_bytes([jax.ShapeDtypeStruct(sds.shape, sds.dtype, sharding=shardings[p])
                               for p, (sds, _) in build.param_specs(cfg).items()])


def plan_train(topo, pcfg, aot: bool) -> StagePlan:
  from brd_jax.data.config import DataConfig
  from brd_jax.training import metrics
  from brd_jax.training import step as step_lib
  from brd_jax.training.config import TrainConfig
  tcfg, dcfg = TrainConfig(), DataConfig()
  cfg, source = _student_shape()
  mesh, shape = _mesh(topo.chips)
  rows = sharding.batch_multiple(mesh)
  if (tcfg.batch_size // tcfg.grad_accum) % rows:
    raise UserError(f"train.batch_size={tcfg.batch_size} / grad_accum={tcfg.grad_accum} is not a "
                    f"multiple of the {rows} batch shards of mesh {shape} on {topo.name}")
  state, *_ = step_lib.abstract_train(cfg, tcfg, mesh)
  kd_topk = 0
  if tcfg.kd_weight > 0:
    from brd_jax.behaviors.config import GenerateConfig
    kd_topk = GenerateConfig().topk
  mem = estimate.train(cfg, state, tcfg.batch_size, tcfg.grad_accum, dcfg.seq_len, mesh, kd_topk)
  fpt = metrics.flops_per_token(cfg, dcfg.seq_len)
  tokens_per_s = topo.chips * topo.peak_flops * pcfg.mfu / fpt
  tokens = tcfg.steps * tcfg.batch_size * dcfg.seq_len
  notes = [f"student shape: {source}; remat {cfg.remat}, compute {cfg.dtype}",
           f"{tcfg.steps:,} steps x {tcfg.batch_size} x {dcfg.seq_len} tokens = {tokens / 1e9:.2f}B "
           f"tokens; step {tcfg.batch_size * dcfg.seq_len / tokens_per_s:.2f} s at MFU {pcfg.mfu:g}"]
  sp = StagePlan("train", f"{cfg.family} {cfg.num_params() / 1e9:.3f}B", dict(zip(
      sharding.MESH_AXES, shape)), mem, fpt, tokens_per_s, _days(tokens / tokens_per_s), notes)
  if aot:
    from brd_jax.planning import aot as aot_lib
    devices = topology.devices(topo)
    sp.compiled = [aot_lib.train_step(cfg, tcfg, dcfg.seq_len, sharding.make_mesh(shape, devices),
                                      kd_topk)]
  return sp


def plan_eval(topo, pcfg, aot: bool) -> StagePlan:
  from brd_jax.evaluation.config import EvalConfig
  from brd_jax.inference import scoring
  ecfg = EvalConfig()
  cfg, source = _student_shape()
  mesh, shape = _mesh(topo.chips)
  T = min(pcfg.eval_len, cfg.max_len)
  rows = scoring.rows_per_batch(T, ecfg.token_budget, sharding.batch_multiple(mesh))
  params = _param_bytes(cfg, mesh)
  mem = estimate.score(cfg, params, rows, T, mesh)
  fpt = 2 * cfg.num_params()
  tokens_per_s = topo.chips * topo.peak_flops * pcfg.mfu / fpt
  notes = [f"student shape: {source}; {rows} rows x {T} tokens a batch (eval.token_budget="
           f"{ecfg.token_budget})"]
  sp = StagePlan("eval", f"{cfg.family} {cfg.num_params() / 1e9:.3f}B", dict(zip(
      sharding.MESH_AXES, shape)), mem, fpt, tokens_per_s, None, notes)
  if aot:
    from brd_jax.planning import aot as aot_lib
    devices = topology.devices(topo)
    sp.compiled = [aot_lib.score_step(cfg, rows, T, sharding.make_mesh(shape, devices))]
  return sp


PLANNERS = {"generate": plan_generate, "train": plan_train, "eval": plan_eval}


def run(topology_name: str | None = None, aot: bool = False):
  """(Topology, [StagePlan]) of every configured stage (gin must be parsed)."""
  pcfg = PlanConfig()
  topo = topology.get(topology_name or pcfg.topology)
  unknown = [s for s in pcfg.stages if s not in PLANNERS]
  if unknown:
    raise UserError(f"plan.stages: unknown {unknown} (known: {', '.join(PLANNERS)})")
  if not 0 < pcfg.mfu <= 1:
    raise UserError(f"plan.mfu={pcfg.mfu}: must be in (0, 1]")
  return topo, [PLANNERS[s](topo, pcfg, aot) for s in pcfg.stages]


def experiment(plans: list[StagePlan]) -> dict | None:
  """The experiment's cost: the teacher's stages once, then every arm x seed's training (an
  arm's train.steps / train.batch_size / data.seq_len scale its run; other bindings do not)."""
  from brd_jax.data.config import DataConfig
  from brd_jax.experiment import PipelineConfig
  from brd_jax.training.config import StudentConfig, TrainConfig
  by = {sp.stage: sp for sp in plans}
  if "train" not in by or by["train"].days is None:
    return None
  pcfg, t0, d0 = PipelineConfig(), TrainConfig(), DataConfig()
  runs = pcfg.runs(d0, t0, StudentConfig())
  tokens0 = t0.steps * t0.batch_size * d0.seq_len
  per_run = {name: by["train"].days * (t.steps * t.batch_size * d.seq_len) / tokens0
             for name, (_, _, d, t, _) in runs.items()}
  teacher = by["generate"].days if "generate" in by else None  # None: corpus size unknown
  return {"teacher_days": teacher, "runs": per_run, "student_days": sum(per_run.values()),
          "arms": list(pcfg.arm_bindings())}


def _render_experiment(exp: dict) -> list[str]:
  out = [f"\n[experiment] {len(exp['arms'])} arms, {len(exp['runs'])} student runs (arm x seed) "
         "on one corpus and one ledger",
         "  teacher (generate), once: " + (f"{exp['teacher_days']:.2f} days"
                                            if exp["teacher_days"] is not None else
                                            "not estimated (corpus.max_paragraphs = 0)"),
         f"  students (train), all runs: {exp['student_days']:.2f} days"]
  out += [f"  - {name}: {days:.2f} days" for name, days in exp["runs"].items()]
  return out


def _size(n: float) -> str:
  return f"{n / GiB:8.2f} GiB" if n >= GiB / 10 else f"{n / 2 ** 20:8.2f} MiB"


def render(topo, plans: list[StagePlan]) -> str:
  """The plan as text: one block per stage, memory by part, then FLOPs and time."""
  out = [f"plan for {topo.name}: {topo.chips} devices on {topo.hosts} host(s), "
         f"{topo.hbm_gib:.2f} GiB HBM"
         + (f" usable ({topo.hbm_note})" if topo.hbm_note else "")
         + f" and {topo.peak_flops / 1e12:.0f} TFLOP/s bf16 each"]
  for sp in plans:
    mesh = "x".join(f"{k}={v}" for k, v in sp.mesh.items() if v > 1) or "1 device"
    out.append(f"\n[{sp.stage}] {sp.model} on mesh {mesh}")
    for k, v in sp.memory.parts.items():
      if v:
        out.append(f"  {k:<26} {_size(v)}")
    out.append(f"  {'analytic total':<26} {_size(sp.memory.total)} per device")
    for c in sp.compiled:
      if c.error:
        out.append(f"  {'compiled ' + c.what:<26} refused: needs {c.needs_bytes / GiB:.2f} GiB of "
                   f"{c.limit_bytes / GiB:.2f} GiB ({c.seconds:.1f} s)")
      else:
        err = (sp.steps.get(c.what, sp.memory).total - c.peak_bytes) / c.peak_bytes
        out.append(f"  {'compiled ' + c.what:<26} {_size(c.peak_bytes)} peak "
                   f"(analytic {err:+.1%}), compiled in {c.seconds:.1f} s")
    verdict = "fits" if sp.needs() <= topo.hbm_bytes else "DOES NOT FIT"
    out.append(f"  {verdict}: {sp.needs() / GiB:.2f} of {topo.hbm_gib:.2f} GiB")
    out.append(f"  {sp.flops_per_token / 1e9:.2f} GFLOP/token, {sp.tokens_per_s:,.0f} tokens/s"
               + (f", {sp.days:.2f} days" if sp.days is not None else ""))
    out.extend(f"  - {n}" for n in sp.notes)
  exp = experiment(plans)
  if exp:
    out += _render_experiment(exp)
  return "\n".join(out)


def check_fits(topo, plans: list[StagePlan]) -> None:
  """UserError (exit 2) naming the first stage that does not fit."""
  for sp in plans:
    if sp.needs() > topo.hbm_bytes:
      raise UserError(f"does not fit: needs {sp.needs() / GiB:.2f} GiB of {topo.hbm_gib:.2f} GiB "
                      f"HBM on {topo.name} ({sp.stage})")


def summary(topo, plans: list[StagePlan]) -> dict:
  return {"topology": topo.name, "hbm_bytes": topo.hbm_bytes, "stages": [{
      "stage": sp.stage, "model": sp.model, "mesh": sp.mesh,
      "memory_bytes": {k: int(v) for k, v in sp.memory.parts.items()},
      "analytic_bytes": int(sp.memory.total),
      "compiled": [{**dataclasses.asdict(c), "analytic_bytes": int(sp.steps.get(
          c.what, sp.memory).total)} for c in sp.compiled],
      "fits": sp.needs() <= topo.hbm_bytes, "flops_per_token": sp.flops_per_token,
      "tokens_per_s": sp.tokens_per_s, "days": sp.days, "notes": sp.notes} for sp in plans],
      "experiment": experiment(plans)}

