"""The host-side pretraining loop: state, data, checkpoints, logging, preemption, evaluation."""
import hashlib
import json
import os
import time

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
from byol_jax import train
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


class Trainer:
  """Pretrains one config in one workdir, resuming from its latest checkpoint."""

  def __init__(self, config, workdir, *, allow_config_change=False, watch=None, lock=None):
    """`watch`: the peer watch of a multi-process run (peers.Watch), told each step; `lock`: the
    workdir's lock (workdir.Lock), refreshed at each log step."""
    self.config = config
    self.workdir = workdir
    self._allow_config_change = allow_config_change
    self._config_changed = False
    self._watch = watch
    self._lock = lock
    per_device = pipeline.per_device_batch_size(config.batch_size, jax.process_count(),
                                                jax.local_device_count(), name="config.batch_size")
    train.check_accumulation(per_device, config.accumulation_steps)
    self.info = sources.dataset_info(config.dataset, config.data_dir,
                                     skip_corrupt=config.skip_corrupt_images,
                                     max_pixels=config.max_image_pixels)
    if self.info.num_classes == 1:
      logging.warning(
          "%s has a single class: the probe's and the evaluation's top-1 are 1.0 "
          "whatever the encoder learns.", config.dataset)
    if jax.process_index() == 0:
      protocol.check_splits(config, self.info)
    self.steps_per_epoch = max(self.info.num_train_examples // config.batch_size, 1)
    self.total_steps = train.total_steps(config, self.steps_per_epoch)
    self.checkpointer = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                                keep=config.keep_checkpoints,
                                                async_save=config.async_checkpoints)
    self.writer = None  # Opened by train(), once the restored step is known.
    self.update = train.map_over_devices(
        train.make_update(config, num_classes=self.info.num_classes,
                          steps_per_epoch=self.steps_per_epoch))
    self.step = 0
    self.state = None
    self._stop_reason = None
    self._profile = ProfilerWindow(None, 0, None)  # Set by train().
    self._skipped_before = 0  # Images the stream skipped before the restored step, all hosts.

  def request_stop(self, reason):
    """Asks the loop to save and return at the end of the current step (e.g. on SIGTERM)."""
    self._stop_reason = reason

  def _batches(self, start_step):
    return self.host_batches(start_step, jax.process_index(), jax.process_count(),
                             jax.local_device_count())

  def host_batches(self, start_step, process_index, process_count, local_device_count):
    """The slices of the global batches that host `process_index` of `process_count` reads.

    Each host reads its own shard of the dataset in its own seeded order, so the union of the
    hosts' slices is a different global batch than one process reads.
    """
    c = self.config
    return pipeline.pretrain_batches(dataset=c.dataset, data_dir=c.data_dir,
                                     split=self.info.pretrain_split, global_batch_size=c.batch_size,
                                     image_size=c.image_size, seed=c.seed, start_step=start_step,
                                     process_index=process_index, process_count=process_count,
                                     local_device_count=local_device_count,
                                     shuffle_buffer=c.shuffle_buffer, crop_min_area=c.crop_min_area,
                                     skip_corrupt=c.skip_corrupt_images)

  def _fresh_state(self):
    c = self.config
    return train.init_state(c, jax.random.PRNGKey(c.seed),
                            image_shape=(c.image_size, c.image_size, 3),
                            num_classes=self.info.num_classes, steps_per_epoch=self.steps_per_epoch)

  def latest_state(self):
    """The latest checkpoint's state, or the untrained one."""
    latest = self.checkpointer.latest_step()
    if latest is None:
      return self.untrained_state()
    fresh = self._fresh_state()
    tree, metadata = self.checkpointer.restore(checkpoint_tree(fresh))
    self._check_config(metadata.get("config", "{}"), latest)
    self._skipped_before = metadata.get("skipped_images", 0)
    logging.info("Resumed from %s at step %d.", self.checkpointer.directory, latest)
    return train.TrainState(**{**fresh._asdict(), **tree})

  def untrained_state(self):
    """The state of step 0: a fresh one, with the modified init if asked."""
    fresh = self._fresh_state()
    if self.config.init != "bn_stats":
      return fresh
    first = next(iter(self._batches(0)))
    augment_first_view = jax.pmap(lambda b: train.augment_views(self.config, b, 0)[0],
                                  axis_name=model.AXIS)
    params = bn_stats.initialize(self.config, fresh.online_params, augment_first_view(first))
    logging.info(
        "Modified init: scales and offsets set from the BN statistics of one "
        "augmented batch of %d images.", self.config.batch_size)
    return fresh._replace(online_params=params, target_params=params)

  def _check_config(self, saved_json, step):
    """Refuses a config that computes something else than the checkpoint's, unless allowed."""
    changed = config_lib.changed_keys(json.loads(saved_json), json.loads(self.config.to_json()))
    if not changed:
      return
    listing = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
    if not self._allow_config_change:
      raise ConfigChangedError(
          f"{self.workdir} holds a run at step {step} whose config differs from this one in what "
          f"it computes ({listing}); resuming would mix two runs. Fix: rerun with the config that "
          "started it, use a new --workdir, or pass --allow_config_change to go on with the new "
          "values (the old config.json is then kept in previous/).")
    logging.warning("Resuming step %d with a changed config (--allow_config_change): %s", step,
                    listing)
    self._config_changed = True

  def _check_hosts_agree(self, latest_step):
    """Stops every host with one message unless all would train the same run from the same step."""
    if jax.process_count() == 1:
      return
    facts = np.array([
        latest_step, self.total_steps, self.info.num_train_examples, self.info.num_left_out,
        config_fingerprint(self.config)
    ], np.int64)
    message = hosts_disagreement(np.asarray(multihost_utils.process_allgather(facts)))
    if message:
      raise HostsDisagreeError(message)

  def _keep_previous_record(self):
    """Sets aside what this run would replace: another run's record on a fresh start; eval.json
    and encoder/ of a finished run trained further; log records past the restored step."""
    if jax.process_index() != 0:
      return
    if self.step == 0:
      workdir_lib.set_aside(self.workdir, workdir_lib.RECORD,
                            "a fresh start: checkpoints/ holds no checkpoint")
      return
    workdir_lib.set_aside(self.workdir, ("eval.json", "encoder"),
                          f"training goes on from step {self.step}, so they are out of date")
    copied = ("config.json",) if self._config_changed else ()
    if metric_writer.has_records_after(os.path.join(self.workdir, "metrics.jsonl"), self.step):
      copied += ("metrics.jsonl", "tensorboard")  # Cut back to the restored step on opening.
    workdir_lib.set_aside(self.workdir, copied, f"resuming at step {self.step} rewrites them",
                          copy=True)

  def _save(self, skipped):
    """Starts a save of the current step, once the previous save (if async) completed."""
    self.checkpointer.wait()
    self.checkpointer.save(self.step, checkpoint_tree(train.unreplicate(self.state)),
                           {"config": self.config.to_json(), "skipped_images": skipped})

  def _stop_requested(self):
    """True at the step where every host stops to save: the same step on all of them.

    One process: after `request_stop` (main's SIGTERM handler). Several: at JAX's preemption sync
    point, which its distributed runtime sets after a SIGTERM on any host; checking it is local,
    so the hosts never wait on each other between steps and dispatch runs ahead of the devices.
    """
    if jax.process_count() > 1 and multihost_utils.reached_preemption_sync_point(self.step):
      self._stop_reason = self._stop_reason or "SIGTERM on a host of this run"
      return True
    return jax.process_count() == 1 and self._stop_reason is not None

  def _skipped_images(self, batches):
    """Images the stream skipped so far, on all hosts (a host collective: log steps only)."""
    skipped = batches.num_skipped
    if jax.process_count() > 1 and self.config.skip_corrupt_images:
      skipped = int(multihost_utils.process_allgather(np.array(skipped, np.int64)).sum())
    return self._skipped_before + skipped

  def _monitor(self, progress):
    """{'knn_top1': ...} of the online encoder on process 0 (config.knn_monitor); its time is left
    out of the images/s."""
    if jax.process_index() != 0:
      return {}
    if self._watch is not None:
      self._watch.busy()  # The other hosts wait at the next step meanwhile.
    started = time.time()
    host_state = train.unreplicate(self.state)
    embed_fn = model.make_embed_fn(self.config, host_state.online_params, host_state.online_state)
    top1 = protocol.monitor_knn(self.config, embed_fn, self.info.num_classes)
    seconds = time.time() - started
    progress.exclude(seconds)
    logging.info("kNN monitor at step %d: top-1 %.4f in %.1f s.", self.step, top1, seconds)
    return {"knn_top1": top1}

  def _flush(self, pending, progress, skipped, monitor):
    """Fetches pending per-step metrics, stops on a non-finite one, logs the last (with the kNN
    monitor's top-1 if `monitor`)."""
    fetched = jax.device_get([m for _, m in pending])
    for (step, _), metrics in zip(pending, fetched):
      if not metrics["finite"][0]:
        raise NonFiniteError(
            f"Non-finite loss or gradient at step {step} (loss={metrics['loss'][0]}, "
            f"grad_norm={metrics['grad_norm'][0]}). Nothing after the last good checkpoint "
            f"(step {self.checkpointer.latest_step()}) was saved; lower config.base_lr or check "
            "the input data.")
    step, metrics = pending[-1][0], {k: v[0] for k, v in fetched[-1].items() if k != "finite"}
    if monitor:  # Once the steps ran: the monitor's time is its own.
      metrics.update(self._monitor(progress))
    if self.config.skip_corrupt_images:  # Left out up front, and skipped by the stream.
      metrics["skipped_images"] = self.info.num_left_out + skipped
    images_per_sec, line = progress.report(step, metrics)
    if jax.process_index() == 0:
      print(line, flush=True)
    rate = {} if images_per_sec is None else {"images_per_sec": images_per_sec}
    self.writer.write(step, {**metrics, **rate, "epoch": step / self.steps_per_epoch})

  def _start(self, host_state):
    """What a run says and writes once, before its first step: config.json and the sizes."""
    c = self.config
    if jax.process_index() == 0:
      files.write_atomically(os.path.join(self.workdir, "config.json"),
                             c.to_json_best_effort(indent=2, sort_keys=True) + "\n")
    sizes = ", ".join(f"{name} {count:,}" for name, count in model.parameter_counts(
        {**host_state.online_params, **(host_state.probe_params or {})}).items())
    logging.info("Training %s (%s) for %d steps (%d per epoch) from step %d. Parameters: %s.",
                 c.method, c.norm, self.total_steps, self.steps_per_epoch, self.step, sizes)

  def train(self):
    """Runs to total_steps. Returns False if stopped early (state saved), True when done."""
    c = self.config
    self._check_hosts_agree(self.checkpointer.latest_step() or 0)
    host_state = self.latest_state()
    self.step = int(host_state.step)
    self.state = train.replicate(host_state)
    if self.step >= self.total_steps:
      return True
    self._keep_previous_record()
    self._start(host_state)
    self.writer = metric_writer.MetricWriter(self.workdir, start_step=self.step,
                                             enabled=jax.process_index() == 0,
                                             hparams=metric_writer.flat_hparams(c))
    self._profile = ProfilerWindow(c.profile_first_step, c.profile_steps,
                                   os.path.join(self.workdir, "tensorboard"))
    batches = self._batches(self.step)
    pending, progress = [], None
    logging.info("Compiling the train step; the first step waits for it.")
    first_start = time.time()
    while self.step < self.total_steps:
      self._profile.before(self.step + 1)
      with jax.profiler.StepTraceAnnotation("train", step_num=self.step + 1):
        self.state, metrics = self.update(self.state, next(batches))
      self.step += 1
      if self._watch is not None:
        self._watch.at_step(self.step)
      pending.append((self.step, metrics))
      self._profile.after(self.step, metrics)
      if progress is None:  # The rate and ETA leave out the first step, which compiles.
        jax.block_until_ready(metrics)
        logging.info("First step, compilation included: %.1f s.", time.time() - first_start)
        progress = metric_writer.Progress(total_steps=self.total_steps,
                                          steps_per_epoch=self.steps_per_epoch,
                                          global_batch_size=c.batch_size, start_step=self.step)
      stop = self._stop_requested()
      at_checkpoint = self.step % c.checkpoint_every == 0 or self.step == self.total_steps
      if stop or at_checkpoint or self.step % c.log_every == 0:
        skipped = self._skipped_images(batches)
        every = c.knn_monitor.every_steps
        monitor = every and (self.step % every == 0 or self.step == self.total_steps)
        self._flush(pending, progress, skipped, monitor)
        pending = []
        self.checkpointer.raise_if_failed()  # A background save that failed stops the run here.
        if self._lock is not None:
          self._lock.refresh()
        if stop:
          return self._save_and_stop(skipped)
        if at_checkpoint:
          self._save(skipped)
    if self._watch is not None:
      self._watch.busy()  # Export and evaluation take no steps.
    return True

  def _save_and_stop(self, skipped):
    """Saves the current step and returns False once it is on disk (or raises why it is not)."""
    if self._watch is not None:
      self._watch.busy()
    self._save(skipped)
    self.checkpointer.wait()  # Raises CheckpointError if the save failed.
    logging.warning("Stop requested (%s): saved step %d.", self._stop_reason, self.step)
    return False

  def close(self):
    """Releases orbax's resources, ends a profile still open and closes the metric files."""
    self.checkpointer.close()
    self._profile.close()
    if self.writer is not None:
      self.writer.close()

  def export(self):
    """Saves the online encoder on its own to WORKDIR/encoder (process 0)."""
    host_state = train.unreplicate(self.state)
    if jax.process_index() == 0:
      export.save_encoder(os.path.join(self.workdir, "encoder"), self.config,
                          host_state.online_params, host_state.online_state)

  def evaluate(self):
    """Linear and kNN evaluation of the online encoder, and of its untrained self for reference.

    The untrained encoder is the run's step-0 encoder: random init, and for init=bn_stats the
    scales and offsets set from batch statistics.
    """
    host_state = train.unreplicate(self.state)
    fresh = self.untrained_state()
    return protocol.evaluate_encoder(
        self.config, embed_fn=model.make_embed_fn(self.config, host_state.online_params,
                                                  host_state.online_state),
        random_init_embed_fn=model.make_embed_fn(self.config, fresh.online_params,
                                                 fresh.online_state))


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
