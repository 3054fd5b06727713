r"""Entry point: pretrain with BYOL or SimCLR, then evaluate; or evaluate an exported encoder.

    python -m byol_jax.main --config=configs/byol_gn_ws.py:tiny --workdir=/tmp/byol
    python -m byol_jax.main --config=configs/byol.py --config.norm=none --config.init=bn_stats \
        --workdir=gs://bucket/run --config.data_dir=gs://bucket/tfds
    python -m byol_jax.main --config=configs/linear_eval.py \
        --config.encoder_dir=/tmp/byol/encoder --workdir=/tmp/byol_eval

A run on an existing workdir resumes from its latest checkpoint; SIGTERM saves and exits.
"""
import json
import signal
import sys

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax
import numpy as np
from ml_collections import config_flags

from byol_jax import config as config_lib
from byol_jax import run
from byol_jax.evaluation import protocol

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, e.g. configs/byol_gn_ws.py or configs/byol.py:tiny.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, logs, the exported encoder and eval.json.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for multi-process runs outside TPU VMs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (hosts).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_MULTIHOST_TPU = flags.DEFINE_bool(
    "multihost_tpu", False, "Call jax.distributed.initialize() with no arguments, as a Cloud TPU "
    "pod slice needs before multi-host checkpointing (experiments/tpu/launch.sh sets it).")
flags.mark_flags_as_required(["config", "workdir"])


def _init_distributed():
  given = [f.value is not None for f in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID)]
  if any(given) and not all(given):
    raise app.UsageError("--coordinator_address, --num_processes and --process_id go together; "
                         "give all three (TPU VMs need none of them).")
  if all(given):
    jax.distributed.initialize(_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  elif _MULTIHOST_TPU.value:
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  workdir = _WORKDIR.value
  if config.get("mode") == "linear_eval":
    results = protocol.evaluate_exported(config)
  else:
    config_lib.validate(config)
    _init_distributed()
    trainer = run.Trainer(config, workdir)
    signal.signal(signal.SIGTERM, lambda *_: trainer.request_stop("SIGTERM"))
    if not trainer.train():
      logging.warning("Stopped at step %d before the end; the checkpoint is saved. Run the same "
                      "command again to resume.", trainer.step)
      sys.exit(143)
    trainer.export()
    if not config.eval.enabled:
      return
    results = trainer.evaluate()
  if jax.process_index() == 0:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    (epath.Path(workdir) / "eval.json").write_text(json.dumps(results, indent=2))
    summary = (f"linear top-1 {results['top1']:.4f} | kNN top-1 {results['knn_top1']:.4f}")
    if "random_init_top1" in results:
      summary += (f" | random-init encoder: linear {results['random_init_top1']:.4f}, "
                  f"kNN {results['random_init_knn_top1']:.4f}")
    print(summary, flush=True)


if __name__ == "__main__":
  np.set_printoptions(precision=4)
  app.run(main)
