"""Where a run's numbers go: a progress line, `metrics.jsonl` and TensorBoard event files.

Only process 0 writes; other processes get a writer that does nothing, so call sites need no
`if jax.process_index() == 0`. Files go through tf.io.gfile, so the workdir may be on GCS.
"""
import json
import time

from absl import logging

from byol_jax import files


class MetricWriter:
  """Appends one JSON object per logged step to metrics.jsonl and the same scalars to TensorBoard.

  A run resumed from step S logs steps S+1... again, so on opening, the record is cut back to what
  the restored state has seen: metrics.jsonl keeps the records of steps <= S (rewritten
  atomically), and TensorBoard gets a new event file rebuilt from those records, which replaces the
  older event files (the run first copies a record it cuts into WORKDIR/previous/). TensorBoard
  never has to resolve duplicate steps across files, however its version treats them. A
  TensorBoard already running keeps what it had loaded until reloaded.
  """

  def __init__(self, workdir, *, start_step=0, enabled=True, hparams=None):
    self._enabled = enabled
    if not enabled:
      return
    # TensorFlow is already loaded by the input pipeline; it writes to local disks and GCS alike.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf
    tf.io.gfile.makedirs(workdir)
    path, events = f"{workdir}/metrics.jsonl", f"{workdir}/tensorboard"
    records = _records_up_to(path, start_step)
    files.write_atomically(path, "".join(json.dumps(r) + "\n" for r in records))
    old_events = tf.io.gfile.glob(f"{events}/events.out.tfevents.*")
    self._jsonl = tf.io.gfile.GFile(path, "a")
    self._summary = tf.summary.create_file_writer(events)
    if hparams:  # In every event file, so that a resumed run's rebuilt file has them too.
      from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top
      with self._summary.as_default():
        hp.hparams(hparams)
    if old_events:
      for record in records:
        self._write_summary(record)
      self._summary.flush()
      for old in old_events:
        tf.io.gfile.remove(old)
      logging.info(
          "Resuming at step %d: metrics.jsonl and TensorBoard keep the %d records up to "
          "it; later ones were from steps the restored checkpoint had not reached.", start_step,
          len(records))

  def write(self, step, scalars):
    if not self._enabled:
      return
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    self._write_summary(record)
    self._summary.flush()

  def _write_summary(self, record):
    with self._summary.as_default():
      for key, value in record.items():
        if key != "step":
          self._tf.summary.scalar(key, value, step=record["step"])

  def close(self):
    if self._enabled:
      self._jsonl.close()
      self._summary.close()


def _records(path, *, warn):
  """The records of metrics.jsonl at `path`, in order (none if it is missing); a line torn by a
  kill is dropped, with a warning if `warn`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.exists(path):
    return
  with tf.io.gfile.GFile(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        if warn:
          logging.warning("Dropping a torn line of %s: %r", path, line[:100])
        continue
      yield record


def _records_up_to(path, step):
  """The records of metrics.jsonl with step <= `step`."""
  return [r for r in _records(path, warn=True) if r["step"] <= step]


def has_records_after(path, step):
  """Whether metrics.jsonl at `path` holds a record of a step after `step`."""
  return any(r["step"] > step for r in _records(path, warn=False))


def flat_hparams(config):
  """A config as TensorBoard hparams: {"eval.knn_k": 20, ...}; unset keys as "None"."""
  flat = {}

  def visit(prefix, node):
    for key, value in node.items():
      if hasattr(value, "items"):
        visit(f"{prefix}{key}.", value)
      else:
        flat[prefix + key] = value if isinstance(value, (bool, int, float, str)) else str(value)

  visit("", config)
  return flat


class Progress:
  """Images/s and ETA over the steps since the last report (the clock starts at `start_step`)."""

  def __init__(self, *, total_steps, steps_per_epoch, global_batch_size, start_step):
    self._total = total_steps
    self._steps_per_epoch = steps_per_epoch
    self._batch = global_batch_size
    self._last_step, self._last_time = start_step, time.time()

  def exclude(self, seconds):
    """Leaves `seconds` of work that is not training (the kNN monitor) out of the next rate."""
    self._last_time += seconds

  def report(self, step, scalars):
    """Returns (images/s, line) and restarts the clock; images/s is None when no step was timed."""
    now = time.time()
    images_per_sec = None
    rate = ""
    if step > self._last_step:
      images_per_sec = (step - self._last_step) * self._batch / max(now - self._last_time, 1e-9)
      eta = (self._total - step) * self._batch / max(images_per_sec, 1e-9)
      rate = f" {images_per_sec:.1f} img/s ETA {_duration(eta)}"
    self._last_step, self._last_time = step, now
    probe = (f"probe_acc {scalars['probe_accuracy']:.3f} " if "probe_accuracy" in scalars else ""
            )  # No probe without labels.
    knn = f"knn_top1 {scalars['knn_top1']:.3f} " if "knn_top1" in scalars else ""
    skipped = (f"skipped_images {scalars['skipped_images']:.0f} "
               if "skipped_images" in scalars else "")
    line = (f"step {step}/{self._total} epoch {step / self._steps_per_epoch:.2f} "
            f"loss {scalars['loss']:.4f} lr {scalars['lr']:.4g} "
            f"tau {scalars['tau']:.5f} {probe}"
            f"pos_cos {scalars['positive_cosine']:.3f} neg_cos {scalars['negative_cosine']:.3f} "
            f"view_cos {scalars['within_view_cosine']:.3f} "
            f"{knn}{skipped}".rstrip() + rate)
    return images_per_sec, line


def _duration(seconds):
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"
