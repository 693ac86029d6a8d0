"""gin parsing, validation and the operative-config dump."""
import gin
import pytest

from brd_jax import config, models, sharding
from brd_jax.errors import UserError


def test_named_model_files_parse_with_gin_and_match_the_registry():
  for name in models.named_configs():
    config.parse([f"models/{name}"])
    assert models.model_config() == models.named_config(name), name
  assert set(models.named_configs()) >= {"smollm2_135m", "xglm_564m", "gpt2_124m", "gpt2_774m",
                                          "vicuna_13b", "llama_tiny"}


def test_bindings_override_files_and_mesh_reads_gin():
  config.parse(["models/llama_tiny", "meshes/cpu8"], ["model.n_layers = 3", "mesh.tensor = 1",
                                                      "mesh.fsdp = 4"])
  assert models.model_config().n_layers == 3
  assert sharding.mesh_shape() == (2, 4, 1)
  assert sharding.make_mesh().shape == {"data": 2, "fsdp": 4, "tensor": 1}


@pytest.mark.parametrize("binding,match", [
    ("model.no_such_field = 1", "no_such_field"),
    ("nothing.here = 1", "nothing"),
    ("model.d_model = ", "model.d_model"),
])
def test_bad_bindings_fail_with_the_binding_named(binding, match):
  with pytest.raises(UserError, match=match):
    config.parse([], [binding])


def test_invalid_values_are_caught_before_compiling():
  config.parse([], ["model.family = 'bert'"])
  with pytest.raises(UserError, match="model.family='bert'"):
    models.model_config()
  config.parse([], ["mesh.data = 3"])
  with pytest.raises(UserError, match="mesh.data=3"):
    sharding.make_mesh()


def test_missing_gin_file():
  with pytest.raises(UserError, match="gin file not found"):
    config.parse(["no/such/file.gin"])


def test_operative_config_written(tmp_path):
  config.parse(["models/llama_tiny"], ["mesh.data = 2"])
  models.model_config()
  sharding.mesh_shape()
  out = config.write_operative_config(tmp_path)
  text = out.read_text()
  assert "model.d_model = 64" in text and "mesh.data = 2" in text
  gin.clear_config()


EXPERIMENTS = sorted(p.stem for p in config.CONFIG_DIR.glob("experiments/*.gin"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_configs_parse_validate_and_build_the_abstract_train_state(name):
  """Every experiment config parses, fits its stated device count and builds the student's
  abstract model and train state (no weights) on that mesh."""
  import math
  import jax
  from brd_jax import experiment
  from brd_jax.behaviors.config import GenerateConfig
  from brd_jax.corpus.config import CorpusConfig
  from brd_jax.data.config import DataConfig
  from brd_jax.evaluation.config import EvalConfig
  from brd_jax.models import build
  from brd_jax.training import optim
  from brd_jax.training import step as step_lib
  from brd_jax.training.config import StudentConfig, TrainConfig
  assert len(EXPERIMENTS) >= 8
  config.parse([f"experiments/{name}"])
  t, d, s, p = TrainConfig(), DataConfig(), StudentConfig(), experiment.PipelineConfig()
  c = CorpusConfig()
  assert (c.inputs or c.from_tasks) and GenerateConfig().teacher and EvalConfig().tasks
  assert t.steps > 0 and s.init != "scratch" and d.level in ("paragraph", "sentence")
  devices = p.devices or 1
  shape = sharding.resolve_shape(sharding.mesh_shape(), devices)
  assert t.batch_size % (shape[0] * shape[1]) == 0
  cfg = models.model_config().replace(**s.overrides())
  cfg = cfg.replace(n_layers=math.ceil(cfg.n_layers / s.keep_every))
  mesh = jax.sharding.AbstractMesh(shape, sharding.MESH_AXES)
  params, _ = build.functional(build.abstract(cfg))
  tx = optim.optimizer(t)
  state = step_lib.abstract_state(tx, params)
  shardings = step_lib.state_shardings(cfg, tx, params, mesh)
  n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(state["params"]))
  assert n_params == cfg.num_params() > 5e7
  assert jax.tree.structure(state) == jax.tree.structure(shardings)
  # the arms: every run's mixture reads only what the one ledger generates, and `brd plan`
  # prices the teacher once and each arm x seed's training
  from brd_jax.planning import plan
  runs = p.runs(d, t, s)
  p.check_runs(runs, GenerateConfig().behaviors)
  assert len(runs) == sum(max(1, len(b.get("seeds", p.seeds))) for b in p.arm_bindings().values())
  teacher = GenerateConfig().teacher
  if teacher.startswith("asset:"):  # the plan reads the teacher's shape from its file
    import needs
    needs.asset(teacher[len("asset:"):])
  topo, plans = plan.run(None if p.devices else "v5e-1")  # CPU configs: one chip, no topology
  cost = plan.experiment(plans)
  train_days = next(sp.days for sp in plans if sp.stage == "train")
  assert list(cost["runs"]) == list(runs) and train_days > 0
  assert cost["student_days"] == pytest.approx(sum(
      train_days * (r[3].steps * r[3].batch_size * r[2].seq_len) / (t.steps * t.batch_size *
                                                                    d.seq_len)
      for r in runs.values()))
  assert (cost["teacher_days"] is None) == (CorpusConfig().max_paragraphs == 0)
