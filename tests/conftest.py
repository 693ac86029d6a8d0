"""Test set-up: 8 fake CPU devices (set before jax is imported) and shared fixtures."""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One persistent XLA compilation cache for the run, made by the first process here (pytest's
# controller) and inherited through the environment by its workers and every `brd` subprocess
# the tests start: the suite's same tiny programs compile once, not once a process. A cache hit
# loads the executable a compile would have built, so no result can differ.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import atexit
  import shutil
  import tempfile
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="brd-test-xla-cache-")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

# Prepared training shards of tests that name no workdir go to the cache; one per run.
if "BRD_TEST_CACHE_HOME" not in os.environ:
  import atexit
  import shutil
  import tempfile
  os.environ["BRD_TEST_CACHE_HOME"] = os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(
      prefix="brd-test-cache-")
  atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)

import collections  # noqa: E402

import pytest  # noqa: E402

import needs  # noqa: E402


def pytest_configure(config):
  for marker, what in [("slow", "takes more than ~20 s"),
                       ("real_model", "uses the real SmolLM2-135M-Instruct asset"),
                       ("multiprocess", "starts several JAX processes")]:
    config.addinivalue_line("markers", f"{marker}: {what}")


@pytest.fixture(scope="session")
def mesh8():
  from brd_jax import sharding
  return sharding.make_mesh((2, 2, 2))


@pytest.fixture(scope="session")
def smollm2_gguf():
  """The real demo teacher; a failed fetch fails the test unless BRD_OFFLINE=1."""
  return needs.asset("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def eval_data():
  """The official evaluation files ($BRD_EVAL_DATA); skip on a fresh clone, fail in CI."""
  return needs.eval_data()


@pytest.fixture(autouse=True)
def _fresh_gin():
  """gin bindings are process-global; a test's bindings must not reach the next test."""
  yield
  import gin
  gin.clear_config()


# ---------------------------------------------------------------- the trust summary line
# Fault and bad-input tests count what they inject and what was survived; the run ends with one
# line of totals. Under xdist each worker sends its counts to the controller.
TRUST = collections.Counter()


class Trust:
  """`trust.injected(n)` when a fault is injected, `trust.survived(n)` once the test has checked
  that nothing was lost; `trust.bad_input(clean)` for each generated bad input."""

  def injected(self, n: int = 1) -> None:
    TRUST["faults injected"] += n

  def survived(self, n: int = 1) -> None:
    TRUST["faults survived"] += n

  def bad_input(self, clean: bool) -> None:
    TRUST["bad inputs tried"] += 1
    TRUST["bad inputs handled cleanly"] += bool(clean)


@pytest.fixture(scope="session")
def trust():
  return Trust()


def pytest_sessionfinish(session):
  if hasattr(session.config, "workeroutput"):  # an xdist worker
    session.config.workeroutput["trust"] = dict(TRUST)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):  # xdist controller; pylint: disable=unused-argument
  TRUST.update(getattr(node, "workeroutput", {}).get("trust", {}))


def pytest_terminal_summary(terminalreporter):
  if TRUST:
    terminalreporter.write_line(
        "trust: faults injected {} / survived {}; bad inputs tried {} / handled cleanly {}".format(
            TRUST["faults injected"], TRUST["faults survived"], TRUST["bad inputs tried"],
            TRUST["bad inputs handled cleanly"]))


@pytest.fixture(scope="session")
def reading_teacher():
  """The tiny teacher that reads (`tiny_teacher.make_reader`): trained once (~45 s) into the asset
  cache, keyed by the digest of its recipe and the templates, and shared by the xdist workers (and
  `tests/mutations.py`'s runs) through a file lock."""
  import filelock
  import tiny_teacher
  from brd_jax import assets
  root = assets.cache_dir() / "test-fixtures"
  root.mkdir(parents=True, exist_ok=True)
  with filelock.FileLock(str(root / "reading_teacher.lock")):
    return tiny_teacher.make_reader(root / f"reading-teacher-{tiny_teacher.recipe_digest()}")
