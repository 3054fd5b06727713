r"""Entry point: pretrain with BYOL or SimCLR, export the encoder, then evaluate it.

    python -m byol_jax.main --config=configs/byol_gn_ws.py:tiny --workdir=/tmp/byol
    python -m byol_jax.main --config=configs/byol.py --config.norm=none --config.init=bn_stats \
        --workdir=gs://bucket/run --config.data_dir=gs://bucket/tfds

JAX's own flags work too (e.g. `--jax_debug_nans`), and `--verbosity=1` shows the libraries' INFO
logs (orbax, tfds), which are left out by default. `byol_jax.linear_eval` evaluates an exported
encoder on its own.

A run on an existing workdir resumes from its latest checkpoint, if its config computes the same
run (else it stops, naming the keys; see --allow_config_change); SIGTERM saves and exits. One run
holds a workdir at a time (workdir.py).
Expected failures (a bad config or dataset, a corrupt image or checkpoint, a diverged loss) print
one message and exit with status 1; anything else keeps its traceback. In a multi-process run, a
process that loses another (a collective with it fails, or it gives no sign of life for
--peer_timeout_seconds: see peers.py) exits at once with status 1 and a message.
"""
import os
import signal
import sys
import threading

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np
from ml_collections import config_flags

from byol_jax import cli
from byol_jax import config as config_lib
from byol_jax import peers
from byol_jax import run
from byol_jax import workdir as workdir_lib

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
_PEER_TIMEOUT = flags.DEFINE_float(
    "peer_timeout_seconds", 60, "In a multi-process run, how long another process may give no "
    "sign of life before this one reports it lost and exits; under JAX's own heartbeat timeout "
    "(100 s), which aborts with no word about the run.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir even though the config changes what the run "
    "computes (e.g. another norm or learning rate); without it such a resume stops and names the "
    "keys. The old config.json is kept in WORKDIR/previous/.")
flags.mark_flags_as_required(["config", "workdir"])

# What a collective or barrier error says when another process of the run is gone.
_PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "heartbeat timeout",
              "Barrier failed", "Gloo")


def _connect_processes():
  """Joins the other processes of a multi-process run: a watch over them (None for one process)."""
  given = [f.value is not None for f in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID)]
  if any(given) and not all(given):
    raise app.UsageError("--coordinator_address, --num_processes and --process_id go together; "
                         "give all three (TPU VMs need none of them).")
  if _PEER_TIMEOUT.value <= 0:
    raise app.UsageError(f"--peer_timeout_seconds={_PEER_TIMEOUT.value:g}: give a positive "
                         "number of seconds.")
  if all(given):
    # The coordinator listens on the address given, not on every interface (JAX's default): its
    # key-value store has no authentication.
    jax.distributed.initialize(_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value,
                               coordinator_bind_address=_COORDINATOR.value)
  elif _MULTIHOST_TPU.value:
    jax.distributed.initialize()
  if jax.process_count() == 1:
    return None
  return peers.Watch(jax.process_index(), jax.process_count(), _PEER_TIMEOUT.value,
                     on_lost=_exit_lost_peer)


def _train(config, workdir):
  """Trains, exports, evaluates and writes eval.json, holding the workdir's lock throughout."""
  config_lib.validate(config)
  watch = _connect_processes()
  workdir_lib.check_writable(workdir)
  lock = workdir_lib.Lock(workdir, jax.process_index())
  try:
    plan = run.plan(config)
    stop = threading.Event()
    if jax.process_count() == 1:  # Several: JAX's runtime catches it (run._stop_reason).
      signal.signal(signal.SIGTERM, lambda *_: stop.set())
    outcome = run.train(plan, workdir, allow_config_change=_ALLOW_CONFIG_CHANGE.value, stop=stop,
                        watch=watch, lock=lock)
    if outcome.completed:
      run.export_encoder(plan, workdir, outcome.state)
      results = _evaluate(plan, outcome.state)
      if results is not None:
        cli.report(results, workdir)
  finally:
    lock.release()
  if watch is not None:
    watch.finished()
  if not outcome.completed:
    logging.warning(
        "Stopped at step %d before the end; the checkpoint is saved. Run the same "
        "command again to resume.", outcome.step)
    sys.exit(143)


def _evaluate(plan, host_state):
  config = plan.config
  if not config.eval.enabled:
    return None
  if not plan.info.num_classes:
    logging.warning(
        "Skipping the evaluation: %s has no labels (a flat image folder). Evaluate "
        "the exported encoder on a labelled dataset with byol_jax.linear_eval.", config.dataset)
    return None
  return run.evaluate(plan, host_state)


def _exit_lost_peer(reason):
  """Reports a lost process and exits at once, skipping jax.distributed's shutdown barrier,
  which would wait for the lost process until the heartbeat timeout and then abort."""
  print(
      f"Process {jax.process_index()} of {jax.process_count()} lost another process of this "
      f"run ({reason}). Its host probably died or was preempted. Rerun the same command on "
      "every host: the run resumes from the last checkpoint that all of them finished.",
      file=sys.stderr, flush=True)
  logging.flush()
  sys.stdout.flush()
  os._exit(1)  # pylint: disable=protected-access


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.quiet_library_logs()
  config, workdir = _CONFIG.value, _WORKDIR.value
  try:
    cli.exit_on_expected_error(_train, config, workdir)
  except jax.errors.JaxRuntimeError as error:
    if jax.process_count() == 1 or not any(s in str(error) for s in _PEER_LOST):
      raise
    _exit_lost_peer(peers.first_line(error))


if __name__ == "__main__":
  np.set_printoptions(precision=4)
  jax.config.config_with_absl()
  app.run(main)
