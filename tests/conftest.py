"""Test set-up: 4 fake CPU devices, so the mapped step and cross-replica reductions really run.

Compiled programs are cached on disk (JAX's persistent cache), so the many identical ResNet steps
that the tests and their subprocesses compile are compiled once per machine. The embedded dataset
is generated once per session, into `shapes10_dir`.
"""
import os
import tempfile

import pytest

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "byol_jax_test_jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
# JAX's switch for programs that compile longer than they run, as every test's do: LLVM's
# optimizations off, which cuts about a third from the compile of a ResNet step. The same float32
# program, rounded differently in its last bits; the tests' tolerances hold at either setting (0
# turns it off).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")


@pytest.fixture(scope="session")
def shapes10_dir(tmp_path_factory):
  """A tfds data directory, empty until a test first reads shapes10 from it (which generates it)."""
  return str(tmp_path_factory.mktemp("tfds"))


def pytest_configure(config):
  """Writes yapf's grammar cache in the main process, before pytest-xdist starts its workers.

  yapf 0.43 renames its grammar pickle into place before flushing it, so two workers importing yapf
  on a machine without the cache can read a half-written file (EOFError while collecting
  test_style.py, seen on CI).
  """
  del config
  if "PYTEST_XDIST_WORKER" not in os.environ:
    import yapf.yapflib.yapf_api  # pylint: disable=import-outside-toplevel,unused-import
