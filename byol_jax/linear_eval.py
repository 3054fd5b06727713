r"""Entry point: linear evaluation (and kNN) of an exported encoder, frozen.

    python -m byol_jax.linear_eval --config=configs/linear_eval.py \
        --config.encoder_dir=WORKDIR/encoder --workdir=EVAL_DIR

Writes EVAL_DIR/eval.json and prints the top-1 line, as a training run ends. The protocol and its
keys are those of a training config's `eval` (configs/linear_eval.py).
"""
from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from byol_jax import cli
from byol_jax import config as config_lib
from byol_jax import workdir as workdir_lib
from byol_jax.evaluation import protocol

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file: configs/linear_eval.py, or configs/linear_eval.py:tiny.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for eval.json.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.quiet_library_logs()
  results = cli.exit_on_expected_error(_evaluate, _CONFIG.value, _WORKDIR.value)
  cli.report(results, _WORKDIR.value)


def _evaluate(config, workdir):
  """Checks the config and the workdir before any work, then evaluates."""
  config_lib.validate_eval(config.eval)
  workdir_lib.check_writable(workdir)
  return protocol.evaluate_exported(config)


if __name__ == "__main__":
  jax.config.config_with_absl()
  app.run(main)
