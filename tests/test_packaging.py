"""The wheel ships the gin configs: a non-editable install resolves named configs."""
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_installs_configs_that_resolve_by_name(tmp_path):
  r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                      "-q", "-w", str(tmp_path / "wheel"), str(ROOT)], capture_output=True,
                     text=True)
  assert r.returncode == 0, r.stderr[-3000:]
  wheel = next((tmp_path / "wheel").glob("brd_jax-*.whl"))
  r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                      str(tmp_path / "site"), str(wheel)], capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-3000:]
  code = ("import brd_jax, brd_jax.config as c, brd_jax.models.config as m; "
          "print(brd_jax.__file__); print(c._resolve_gin_file('experiments/demo_cpu')); "
          "print(m.named_config('smollm2_135m').n_layers)")
  env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
  r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                     cwd=tmp_path)
  assert r.returncode == 0, r.stderr[-3000:]
  where, gin_file, layers = r.stdout.split()
  assert where.startswith(str(tmp_path / "site"))
  assert gin_file == str(tmp_path / "site" / "brd_jax" / "configs" / "experiments" / "demo_cpu.gin")
  assert layers == "30"
