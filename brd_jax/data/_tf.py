"""TensorFlow, imported once and quietly (its native start-up lines ignore TF_CPP_MIN_LOG_LEVEL)."""
import os

from brd_jax.io_utils import native_stderr_silenced

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
with native_stderr_silenced():
  import tensorflow as tf  # noqa: F401  # pylint: disable=unused-import
  import seqio  # noqa: F401  # pylint: disable=unused-import
