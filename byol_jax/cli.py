"""What the two entry points (`main`, `linear_eval`) share: a quiet log, one-line expected
errors, and how results are reported.

Libraries log every checkpoint save, dataset build and backend probe at INFO (orbax alone writes a
dozen lines per save). Those INFO lines are left out unless `--verbosity=1` (or higher) asks for
them; their warnings and errors always show, as does everything byol_jax logs.
"""
import json
import logging as python_logging
import os
import sys

from absl import logging
from etils import epath
import jax

from byol_jax import checkpoint
from byol_jax import config as config_lib
from byol_jax import files
from byol_jax import run
from byol_jax import workdir as workdir_lib
from byol_jax.data import sources

# Errors whose message says all a user needs: no traceback.
EXPECTED_ERRORS = (config_lib.ConfigError, sources.DatasetError, sources.DatasetNotFoundError,
                   sources.CorruptImageError, checkpoint.CheckpointError, run.NonFiniteError,
                   run.HostsDisagreeError, workdir_lib.WorkdirError)
_OWN_CODE = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Library warnings that concern the library's own code, not the run.
_LIBRARY_NOISE = ("is deprecated and will be removed",)


def _keep(record):
  """The log filter: all of byol_jax's records; a library's only if a warning or --verbosity>=1."""
  if record.pathname.startswith(_OWN_CODE) or logging.get_verbosity() >= 1:
    return True
  return record.levelno >= python_logging.WARNING and not any(noise in record.getMessage()
                                                              for noise in _LIBRARY_NOISE)


def quiet_library_logs():
  """Installs the filter on absl's handler, through which Python's and absl's logs both pass."""
  handler = logging.get_absl_handler()
  if _keep not in handler.filters:
    handler.addFilter(_keep)


def exit_on_expected_error(fn, *args):
  """Runs fn(*args); an expected error prints one line and exits with status 1."""
  try:
    return fn(*args)
  except EXPECTED_ERRORS as error:
    sys.exit(f"{type(error).__name__}: {error}")


def report(results, workdir):
  """Writes WORKDIR/eval.json, an older one set aside, and prints the one-line summary (process
  0)."""
  if results is None or jax.process_index() != 0:
    return
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  workdir_lib.set_aside(workdir, ("eval.json",), "a new evaluation replaces it")
  files.write_atomically(epath.Path(workdir) / "eval.json", json.dumps(results, indent=2))
  summary = f"linear top-1 {results['top1']:.4f} | kNN top-1 {results['knn_top1']:.4f}"
  if "random_init_top1" in results:
    summary += (f" | random-init encoder: linear {results['random_init_top1']:.4f}, "
                f"kNN {results['random_init_knn_top1']:.4f}")
  print(summary, flush=True)
