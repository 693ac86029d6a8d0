"""The rules of tests/needs.py, run as a user runs the suite: a missing asset fails a test unless
BRD_OFFLINE=1; missing evaluation data skips with the reason, and fails under BRD_STRICT=1."""
import os
import subprocess
import sys

import pytest

from cli_run import ROOT

PROBE = '''
def test_asset(smollm2_gguf):
  assert smollm2_gguf.exists()

def test_eval_data(eval_data):
  assert (eval_data / "rte").is_dir()
'''


@pytest.mark.parametrize("env, outcome", [
    ({}, "1 skipped, 1 error"),  # a fixture that fails is an error: the run fails
    ({"BRD_OFFLINE": "1"}, "2 skipped"),
    ({"BRD_STRICT": "1"}, "2 errors"),
])
def test_missing_assets_and_data_fail_or_skip_as_the_switches_say(tmp_path, env, outcome):
  (tmp_path / "test_probe.py").write_text(PROBE)
  for f in ("conftest.py", "needs.py"):  # the suite's own fixtures, beside the probe
    (tmp_path / f).write_text((ROOT / "tests" / f).read_text())
  base = {k: v for k, v in os.environ.items() if k not in ("BRD_STRICT", "BRD_OFFLINE")}
  env = {**base, "BRD_CACHE": str(tmp_path / "empty_cache"),  # nothing fetched yet
         "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_NO_INDEX": "1",  # unreachable
         "BRD_PYPI_SIMPLE": "http://127.0.0.1:9/simple",
         "BRD_EVAL_DATA": str(tmp_path / "no_eval_data"), **env}
  r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                      "-p", "no:xdist", str(tmp_path)], cwd=tmp_path, env=env,
                     capture_output=True, text=True, timeout=300)
  assert r.stdout.strip().splitlines()[-1].startswith(outcome + " in"), r.stdout[-3000:]
  assert (r.returncode == 0) == (outcome == "2 skipped")
