"""An experiment: the students trained on one corpus and one ledger (the `pipeline` gin
configurable). Named arms, each a set of bindings over data.* / train.* / student.*, are trained
once per seed; `brd pipeline` runs them and `brd plan` prices them. TF-free and light, so gin
parsing and planning stay fast and below the pipeline in the import graph."""
from __future__ import annotations

import dataclasses

import gin

from brd_jax.data.config import DataConfig
from brd_jax.errors import UserError
from brd_jax.training.config import StudentConfig, TrainConfig

_ARM_FIELDS = {"data": DataConfig, "train": TrainConfig, "student": StudentConfig}


@gin.configurable("pipeline")
@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """The students trained on one corpus and one ledger (the arms), and what is evaluated."""
  control: bool = True            # default arms: BRD and the corpus-only control (same budget)
  # name -> {"data.mixture": "brd_mix_no_ner", "train.kd_weight": 0.5, "student.init": ...}: the
  # bindings over data.* / train.* / student.* that make each arm, and optionally "seeds" (the
  # arm's own, instead of pipeline.seeds); None: brd (+ corpus_only)
  arms: dict | None = None
  seeds: tuple = ()               # each arm once per seed s (train.seed = data.seed = s; runs
                                  # named ARM-sS); (): once, with the seeds as configured
  reference: str = ""             # the arm every other is compared with ('': corpus_only if
                                  # there is one, else the first arm)
  # tasks whose unlabeled inputs the teacher answers (task distillation, `brd_tdist`: the
  # mixtures brd_task_distill / brd_mix_task_distill); read from eval.data_dir, labels never read
  task_distill: tuple = ()
  eval_teacher: bool = True
  eval_student_init: bool = True
  compare_to_teacher: bool = True  # students' eval adds CE / KL to the teacher (same tokenizer)
  devices: int = 0                # the device count a config is written for (0: any)
  # arm -> the paper's average accuracy (%) for its counterpart, shown beside ours in the report
  paper: dict | None = None
  paper_source: str = ""          # where those figures are from (table, setting, tasks)

  def __post_init__(self):
    for arm, bindings in self.arm_bindings().items():
      if not arm.replace("_", "").isalnum():
        raise UserError(f"pipeline.arms: arm name {arm!r} must be letters, digits and _")
      for key in bindings:
        what, _, field = key.partition(".")
        if key == "seeds":
          _check_seeds(f"pipeline.arms[{arm!r}]['seeds']", bindings[key], empty=False)
        elif what not in _ARM_FIELDS or field not in {
            f.name for f in dataclasses.fields(_ARM_FIELDS[what])}:
          raise UserError(f"pipeline.arms[{arm!r}]: {key!r} is not a data.*, train.* or "
                          "student.* setting (or 'seeds')")
    if self.reference and self.reference not in self.arm_bindings():
      raise UserError(f"pipeline.reference={self.reference!r} is not one of the arms")
    for arm, v in (self.paper or {}).items():
      if arm not in self.arm_bindings() or not isinstance(v, (int, float)):
        raise UserError(f"pipeline.paper[{arm!r}]={v!r}: the paper's figure (a number) for one "
                        f"of the arms ({', '.join(self.arm_bindings())})")
    _check_seeds("pipeline.seeds", self.seeds)

  def arm_bindings(self) -> dict[str, dict]:
    if self.arms is not None:
      if not self.arms:
        raise UserError("pipeline.arms is empty")
      return dict(self.arms)
    return {"brd": {}, **({"corpus_only": {"data.mixture": "brd_corpus_only"}}
                          if self.control else {})}

  def reference_arm(self) -> str:
    arms = self.arm_bindings()
    return self.reference or ("corpus_only" if "corpus_only" in arms else next(iter(arms)))

  def runs(self, data, train, student) -> dict[str, tuple]:
    """run name -> (arm, seed or None, its data, train and student configs)."""
    out = {}
    for arm, bindings in self.arm_bindings().items():
      cfgs = {"data": data, "train": train, "student": student}
      for key, value in bindings.items():
        if key != "seeds":
          what, _, field = key.partition(".")
          cfgs[what] = dataclasses.replace(cfgs[what], **{field: value})
      for seed in bindings.get("seeds", self.seeds) or (None,):
        d, t = cfgs["data"], cfgs["train"]
        if seed is not None:
          d, t = dataclasses.replace(d, seed=seed), dataclasses.replace(t, seed=seed)
        out[arm if seed is None else f"{arm}-s{seed}"] = (arm, seed, d, t, cfgs["student"])
    return out

  def check_runs(self, runs: dict, behaviors) -> None:
    """Every run's mixture reads only behaviours the one ledger generates (it is generated
    once) and task distillation only where `pipeline.task_distill` names the tasks."""
    from brd_jax.data.tasks import TASKS, mixture_tasks
    tasks = TASKS + tuple(f"brd_{b}" for b in behaviors if f"brd_{b}" not in TASKS)
    for name, (_, _, dcfg, _, _) in runs.items():
      try:
        named = mixture_tasks(dcfg.mixture, tasks)
      except UserError as e:
        raise UserError(f"run {name}: {e}") from None
      if "brd_tdist" in named and not self.task_distill:
        raise UserError(f"run {name}: mixture {dcfg.mixture} trains on task distillation; set "
                        "pipeline.task_distill to the tasks the teacher answers")
      # SKD is optional in the BRD mixtures (empty without it) but the point of brd_skd_only
      # and of a mixture naming brd_skd itself
      need = {t[len("brd_"):] for t in named} - {"ori", "tdist", "skd"} | (
          {"skd"} if dcfg.mixture == "brd_skd_only" or "brd_skd" in dcfg.mixture.split("+")
          else set())
      if need - set(behaviors):
        raise UserError(f"run {name}: mixture {dcfg.mixture} reads {', '.join(sorted(need))}, "
                        f"but generate.behaviors = {tuple(behaviors)!r}")


def _check_seeds(what: str, seeds, empty: bool = True) -> None:
  if not isinstance(seeds, (tuple, list)) or (not empty and not seeds) or any(
      not isinstance(s, int) or s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
    raise UserError(f"{what}={seeds!r}: distinct integers >= 0")
