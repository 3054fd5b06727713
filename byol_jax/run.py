"""The pretraining run, top to bottom: what the run is, its input, its state (fresh or restored),
the step, and the loop with its periodic actions (log, kNN monitor, checkpoint, stop).

`main` calls `train`, then `export_encoder` and `evaluate`. Experiments and tests call the pure
pieces: `plan` (the data and the run's length), `host_batches`, `untrained_state` (step 0, with the
modified init) and `latest_state` (step 0 or the latest checkpoint's).
"""
import hashlib
import json
import os
import time
from typing import Any, NamedTuple

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from byol_jax import bn_stats
from byol_jax import checkpoint
from byol_jax import config as config_lib
from byol_jax import export
from byol_jax import files
from byol_jax import metric_writer
from byol_jax import model
from byol_jax import train as train_lib
from byol_jax import workdir as workdir_lib
from byol_jax.data import pipeline
from byol_jax.data import sources
from byol_jax.evaluation import protocol


class NonFiniteError(FloatingPointError):
  """The loss or the gradient became NaN or infinite."""


class ConfigChangedError(config_lib.ConfigError):
  """A resumed run whose config computes something else than the checkpoint's run."""


class HostsDisagreeError(RuntimeError):
  """The processes of one run would train different things (config, data or restored step)."""


class Plan(NamedTuple):
  """What a config's run is before any step: its data and its length."""
  config: Any
  info: sources.DatasetInfo
  steps_per_epoch: int
  total_steps: int


def plan(config):
  """The run of a validated config, checked against the devices and the dataset it will use."""
  per_device = pipeline.per_device_batch_size(config.batch_size, jax.process_count(),
                                              jax.local_device_count(), name="config.batch_size")
  train_lib.check_accumulation(per_device, config.accumulation_steps)
  info = sources.dataset_info(config.dataset, config.data_dir,
                              skip_corrupt=config.skip_corrupt_images,
                              max_pixels=config.max_image_pixels)
  if info.num_classes == 1:
    logging.warning(
        "%s has a single class: the probe's and the evaluation's top-1 are 1.0 "
        "whatever the encoder learns.", config.dataset)
  if jax.process_index() == 0:
    protocol.check_splits(config, info)
  steps_per_epoch = max(info.num_train_examples // config.batch_size, 1)
  return Plan(config, info, steps_per_epoch, train_lib.total_steps(config, steps_per_epoch))


# ---------------------------------------------------------------------------------------------
# Input.


def host_batches(run, start_step, process_index=None, process_count=None, local_device_count=None):
  """The slices of the global batches from `start_step` on that one host reads (default: this
  process, with its local devices).

  Each host reads its own shard of the dataset in its own seeded order, so the union of the
  hosts' slices is a different global batch than one process reads.
  """
  c = run.config
  return pipeline.pretrain_batches(
      dataset=c.dataset, data_dir=c.data_dir, split=run.info.pretrain_split,
      global_batch_size=c.batch_size, image_size=c.image_size, seed=c.seed, start_step=start_step,
      process_index=jax.process_index() if process_index is None else process_index,
      process_count=jax.process_count() if process_count is None else process_count,
      local_device_count=local_device_count or jax.local_device_count(),
      shuffle_buffer=c.shuffle_buffer, crop_min_area=c.crop_min_area,
      skip_corrupt=c.skip_corrupt_images)


# ---------------------------------------------------------------------------------------------
# State: fresh, untrained (step 0), or restored.


def fresh_state(run):
  c = run.config
  return train_lib.init_state(c, jax.random.PRNGKey(config_lib.weights_seed(c)),
                              image_shape=(c.image_size, c.image_size, 3),
                              num_classes=run.info.num_classes, steps_per_epoch=run.steps_per_epoch)


def untrained_state(run, batches=host_batches):
  """The state of step 0: a fresh one, with the modified init (from the first batch of
  `batches(run, 0)`) if the config asks for it."""
  fresh = fresh_state(run)
  config = run.config
  if config.init != "bn_stats":
    return fresh
  first = next(iter(batches(run, 0)))
  augment_first_view = jax.pmap(lambda b: train_lib.augment_views(config, b, 0)[0],
                                axis_name=model.AXIS)
  params = bn_stats.initialize(config, fresh.online_params, augment_first_view(first))
  logging.info(
      "Modified init: scales and offsets set from the BN statistics of one "
      "augmented batch of %d images.", config.batch_size)
  return fresh._replace(online_params=params, target_params=params)


class Restored(NamedTuple):
  state: train_lib.TrainState  # One host copy.
  skipped_images: int  # Images the stream skipped before the restored step, all hosts.
  config_changed: bool  # Resumed with another config (--allow_config_change).


def latest_state(run, checkpointer, *, batches=host_batches, allow_config_change=False):
  """The latest checkpoint's state, or the untrained one if there is none."""
  latest = checkpointer.latest_step()
  if latest is None:
    return Restored(untrained_state(run, batches), 0, False)
  fresh = fresh_state(run)
  tree, metadata = checkpointer.restore(checkpoint_tree(fresh))
  changed = _check_config(run.config, metadata.get("config", "{}"), latest, checkpointer,
                          allow_config_change)
  logging.info("Resumed from %s at step %d.", checkpointer.directory, latest)
  return Restored(train_lib.TrainState(**{**fresh._asdict(), **tree}),
                  metadata.get("skipped_images", 0), changed)


def _check_config(config, saved_json, step, checkpointer, allow_config_change):
  """True if resuming with a changed config (allowed); raises if not allowed."""
  changed = config_lib.changed_keys(json.loads(saved_json), json.loads(config.to_json()))
  if not changed:
    return False
  listing = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
  workdir = checkpointer.directory.parent
  if not allow_config_change:
    raise ConfigChangedError(
        f"{workdir} holds a run at step {step} whose config differs from this one in what "
        f"it computes ({listing}); resuming would mix two runs. Fix: rerun with the config that "
        "started it, use a new --workdir, or pass --allow_config_change to go on with the new "
        "values (the old config.json is then kept in previous/).")
  logging.warning("Resuming step %d with a changed config (--allow_config_change): %s", step,
                  listing)
  return True


# ---------------------------------------------------------------------------------------------
# The run.


class Outcome(NamedTuple):
  completed: bool  # False: stopped early, the state saved.
  step: int
  state: train_lib.TrainState  # One host copy of the last step's state.


def train(run, workdir, *, batches=host_batches, allow_config_change=False, stop=None, watch=None,
          lock=None):
  """Trains to run.total_steps from the latest checkpoint in `workdir`, saving as it goes.

  `stop`: a threading.Event set to save and return at the end of the current step (main's
  SIGTERM handler); `watch`: the peer watch of a multi-process run (peers.Watch), told each step;
  `lock`: the workdir's lock (workdir.Lock), refreshed at each log step.
  """
  c = run.config
  checkpointer = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                         keep=c.keep_checkpoints, async_save=c.async_checkpoints)
  profile, writer = ProfilerWindow(None, 0, None), None
  try:
    update = train_lib.map_over_devices(
        train_lib.make_update(c, num_classes=run.info.num_classes,
                              steps_per_epoch=run.steps_per_epoch))
    _check_hosts_agree(run, checkpointer.latest_step() or 0)
    restored = latest_state(run, checkpointer, batches=batches,
                            allow_config_change=allow_config_change)
    step = int(restored.state.step)
    if step >= run.total_steps:
      return Outcome(True, step, restored.state)
    _keep_previous_record(workdir, step, restored.config_changed)
    _announce(run, workdir, restored.state, step)
    state = train_lib.replicate(restored.state)
    writer = metric_writer.MetricWriter(workdir, start_step=step, enabled=jax.process_index() == 0,
                                        hparams=metric_writer.flat_hparams(c))
    profile = ProfilerWindow(c.profile_first_step, c.profile_steps,
                             os.path.join(workdir, "tensorboard"))
    stream = batches(run, step)
    pending, progress = [], None
    logging.info("Compiling the train step; the first step waits for it.")
    first_start = time.time()
    while step < run.total_steps:
      # The step.
      profile.before(step + 1)
      with jax.profiler.StepTraceAnnotation("train", step_num=step + 1):
        state, metrics = update(state, next(stream))
      step += 1
      if watch is not None:
        watch.at_step(step)
      pending.append((step, metrics))
      profile.after(step, metrics)
      if progress is None:  # The rate and ETA leave out the first step, which compiles.
        jax.block_until_ready(metrics)
        logging.info("First step, compilation included: %.1f s.", time.time() - first_start)
        progress = metric_writer.Progress(total_steps=run.total_steps,
                                          steps_per_epoch=run.steps_per_epoch,
                                          global_batch_size=c.batch_size, start_step=step)
      # Its periodic actions: log (with the kNN monitor), checkpoint, stop.
      stop_reason = _stop_reason(step, stop)
      at_checkpoint = step % c.checkpoint_every == 0 or step == run.total_steps
      if stop_reason or at_checkpoint or step % c.log_every == 0:
        skipped = restored.skipped_images + _skipped_images(c, stream)
        every = c.knn_monitor.every_steps
        monitor = every and (step % every == 0 or step == run.total_steps)
        scalars = _fetch(pending, checkpointer)
        if monitor:  # Once the steps ran: the monitor's time is its own.
          scalars.update(_monitor(run, state, step, progress, watch))
        if c.skip_corrupt_images:  # Left out up front, and skipped by the stream.
          scalars["skipped_images"] = run.info.num_left_out + skipped
        _log(run, writer, progress, step, scalars)
        pending = []
        checkpointer.raise_if_failed()  # A background save that failed stops the run here.
        if lock is not None:
          lock.refresh()
        if stop_reason or at_checkpoint:
          if stop_reason and watch is not None:
            watch.busy()
          checkpointer.wait()  # The previous save, if async, completed.
          checkpointer.save(step, checkpoint_tree(train_lib.unreplicate(state)),
                            {"config": c.to_json(), "skipped_images": skipped})
        if stop_reason:
          checkpointer.wait()  # Raises CheckpointError if the save failed.
          logging.warning("Stop requested (%s): saved step %d.", stop_reason, step)
          return Outcome(False, step, train_lib.unreplicate(state))
    if watch is not None:
      watch.busy()  # Export and evaluation take no steps.
    return Outcome(True, step, train_lib.unreplicate(state))
  finally:
    checkpointer.close()  # Waits for a save still being written.
    profile.close()
    if writer is not None:
      writer.close()


def _check_hosts_agree(run, latest_step):
  """Stops every host with one message unless all would train the same run from the same step."""
  if jax.process_count() == 1:
    return
  facts = np.array([
      latest_step, run.total_steps, run.info.num_train_examples, run.info.num_left_out,
      config_fingerprint(run.config)
  ], np.int64)
  message = hosts_disagreement(np.asarray(multihost_utils.process_allgather(facts)))
  if message:
    raise HostsDisagreeError(message)


def _keep_previous_record(workdir, step, config_changed):
  """Sets aside what this run would replace: another run's record on a fresh start; eval.json
  and encoder/ of a finished run trained further; log records past the restored step."""
  if jax.process_index() != 0:
    return
  if step == 0:
    workdir_lib.set_aside(workdir, workdir_lib.RECORD,
                          "a fresh start: checkpoints/ holds no checkpoint")
    return
  workdir_lib.set_aside(workdir, ("eval.json", "encoder"),
                        f"training goes on from step {step}, so they are out of date")
  copied = ("config.json",) if config_changed else ()
  if metric_writer.has_records_after(os.path.join(workdir, "metrics.jsonl"), step):
    copied += ("metrics.jsonl", "tensorboard")  # Cut back to the restored step on opening.
  workdir_lib.set_aside(workdir, copied, f"resuming at step {step} rewrites them", copy=True)


def _announce(run, workdir, host_state, step):
  """What a run says and writes once, before its first step: config.json and the sizes."""
  c = run.config
  if jax.process_index() == 0:
    files.write_atomically(os.path.join(workdir, "config.json"),
                           c.to_json_best_effort(indent=2, sort_keys=True) + "\n")
  sizes = ", ".join(f"{name} {count:,}" for name, count in model.parameter_counts(
      {**host_state.online_params, **(host_state.probe_params or {})}).items())
  logging.info("Training %s (%s) for %d steps (%d per epoch) from step %d. Parameters: %s.",
               c.method, c.norm, run.total_steps, run.steps_per_epoch, step, sizes)


def _stop_reason(step, stop):
  """Why every host stops to save at this step (the same step on all of them), or None.

  One process: after `stop` is set (main's SIGTERM handler). Several: at JAX's preemption sync
  point, which its distributed runtime sets after a SIGTERM on any host; checking it is local,
  so the hosts never wait on each other between steps and dispatch runs ahead of the devices.
  """
  if jax.process_count() > 1:
    if multihost_utils.reached_preemption_sync_point(step):
      return "SIGTERM on a host of this run"
    return None
  return "SIGTERM" if stop is not None and stop.is_set() else None


def _skipped_images(config, stream):
  """Images the stream skipped so far, on all hosts (a host collective: log steps only)."""
  skipped = stream.num_skipped
  if jax.process_count() > 1 and config.skip_corrupt_images:
    skipped = int(multihost_utils.process_allgather(np.array(skipped, np.int64)).sum())
  return skipped


def _fetch(pending, checkpointer):
  """The last pending step's metrics, once every pending step's are known to be finite."""
  fetched = jax.device_get([m for _, m in pending])
  for (step, _), metrics in zip(pending, fetched):
    if not metrics["finite"][0]:
      raise NonFiniteError(
          f"Non-finite loss or gradient at step {step} (loss={metrics['loss'][0]}, "
          f"grad_norm={metrics['grad_norm'][0]}). Nothing after the last good checkpoint "
          f"(step {checkpointer.latest_step()}) was saved; lower config.base_lr or check "
          "the input data.")
  return {k: v[0] for k, v in fetched[-1].items() if k != "finite"}


def _monitor(run, state, step, progress, watch):
  """{'knn_top1': ...} of the online encoder on process 0 (config.knn_monitor); its time is left
  out of the images/s."""
  if jax.process_index() != 0:
    return {}
  if watch is not None:
    watch.busy()  # The other hosts wait at the next step meanwhile.
  started = time.time()
  host_state = train_lib.unreplicate(state)
  embed_fn = model.make_embed_fn(run.config, host_state.online_params, host_state.online_state)
  top1 = protocol.monitor_knn(run.config, embed_fn, run.info.num_classes)
  seconds = time.time() - started
  progress.exclude(seconds)
  logging.info("kNN monitor at step %d: top-1 %.4f in %.1f s.", step, top1, seconds)
  return {"knn_top1": top1}


def _log(run, writer, progress, step, scalars):
  """The progress line (process 0), metrics.jsonl and TensorBoard."""
  images_per_sec, line = progress.report(step, scalars)
  if jax.process_index() == 0:
    print(line, flush=True)
  rate = {} if images_per_sec is None else {"images_per_sec": images_per_sec}
  writer.write(step, {**scalars, **rate, "epoch": step / run.steps_per_epoch})


# ---------------------------------------------------------------------------------------------
# After training: the encoder on its own, and its evaluation.


def export_encoder(run, workdir, host_state):
  """Saves the online encoder on its own to WORKDIR/encoder (process 0)."""
  if jax.process_index() == 0:
    export.save_encoder(os.path.join(workdir, "encoder"), run.config, host_state.online_params,
                        host_state.online_state)


def evaluate(run, host_state, batches=host_batches):
  """Linear and kNN evaluation of the online encoder, and of its untrained self for reference.

  The untrained encoder is the run's step-0 encoder: random init, and for init=bn_stats the
  scales and offsets set from batch statistics.
  """
  fresh = untrained_state(run, batches)
  return protocol.evaluate_encoder(
      run.config, embed_fn=model.make_embed_fn(run.config, host_state.online_params,
                                               host_state.online_state),
      random_init_embed_fn=model.make_embed_fn(run.config, fresh.online_params, fresh.online_state))


class ProfilerWindow:
  """Traces steps [first, first + count) into `log_dir`, for TensorBoard's profile tab."""

  def __init__(self, first, count, log_dir):
    self._first, self._last, self._log_dir = first, (first or 0) + count - 1, log_dir
    self._tracing = False

  def before(self, step):
    if step == self._first:
      jax.profiler.start_trace(self._log_dir)
      self._tracing = True

  def after(self, step, metrics):
    if self._tracing and step == self._last:
      jax.block_until_ready(metrics)  # The trace ends once the last traced step has run.
      self.close()
      logging.info("Wrote a profile of steps %d-%d to %s (TensorBoard's profile tab).", self._first,
                   self._last, self._log_dir)

  def close(self):
    if self._tracing:
      jax.profiler.stop_trace()
      self._tracing = False


def checkpoint_tree(state):
  """A TrainState as a checkpoint holds it: a dict without the None fields (SimCLR has no
  target)."""
  return {k: v for k, v in state._asdict().items() if v is not None}


def config_fingerprint(config):
  """A 63-bit hash of the keys of `config` that change what a run computes."""
  computing = {
      k: v for k, v in json.loads(config.to_json()).items() if k not in config_lib.HOW_IT_RUNS
  }
  digest = hashlib.sha256(json.dumps(computing, sort_keys=True).encode()).digest()
  return int.from_bytes(digest[:8], "little") >> 1


_HOST_FACTS = ("restored step", "total steps", "pretraining images", "images left out",
               "config fingerprint")


def hosts_disagreement(facts):
  """None if every row of facts [process, len(_HOST_FACTS)] is the same, else the message."""
  differing = [i for i in range(facts.shape[1]) if len(set(facts[:, i].tolist())) > 1]
  if not differing:
    return None
  table = "; ".join(f"{_HOST_FACTS[i]}: " + ", ".join(f"process {p} {facts[p, i]}"
                                                      for p in range(len(facts)))
                    for i in differing)
  return (f"The processes of this run disagree ({table}); they would train different things and "
          "hang at a collective. Fix: give every host the same command and config, the same "
          "dataset files and one shared --workdir (e.g. on GCS), then rerun on every host.")
