"""Where a run's numbers go: a progress line, `metrics.jsonl` and TensorBoard event files.

Only process 0 writes; other processes get a writer that does nothing, so call sites need no
`if jax.process_index() == 0`. Files go through tf.io.gfile, so the workdir may be on GCS.
"""
import json
import time

from absl import logging


class MetricWriter:
  """Appends one JSON object per logged step to metrics.jsonl and the same scalars to TensorBoard."""

  def __init__(self, workdir, *, enabled=True):
    self._enabled = enabled
    if not enabled:
      return
    # TensorFlow is already loaded by the input pipeline; it writes to local disks and GCS alike.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._tf = tf
    tf.io.gfile.makedirs(workdir)
    self._jsonl = tf.io.gfile.GFile(f"{workdir}/metrics.jsonl", "a")
    self._summary = tf.summary.create_file_writer(f"{workdir}/tensorboard")

  def write(self, step, scalars):
    if not self._enabled:
      return
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    with self._summary.as_default():
      for key, value in record.items():
        if key != "step":
          self._tf.summary.scalar(key, value, step=int(step))
    self._summary.flush()

  def close(self):
    if self._enabled:
      self._jsonl.close()
      self._summary.close()


class Progress:
  """Images/s and ETA over the steps since the last report."""

  def __init__(self, *, total_steps, steps_per_epoch, global_batch_size, start_step):
    self._total = total_steps
    self._steps_per_epoch = steps_per_epoch
    self._batch = global_batch_size
    self._last_step, self._last_time = start_step, time.time()

  def report(self, step, scalars):
    """Returns (images/s, line) and restarts the clock."""
    now = time.time()
    images_per_sec = (step - self._last_step) * self._batch / max(now - self._last_time, 1e-9)
    eta = (self._total - step) * self._batch / max(images_per_sec, 1e-9)
    self._last_step, self._last_time = step, now
    line = (f"step {step}/{self._total} epoch {step / self._steps_per_epoch:.2f} "
            f"loss {scalars['loss']:.4f} lr {scalars['lr']:.4g} "
            f"tau {scalars['tau']:.5f} probe_acc {scalars['probe_accuracy']:.3f} "
            f"pos_cos {scalars['positive_cosine']:.3f} neg_cos {scalars['negative_cosine']:.3f} "
            f"{images_per_sec:.1f} img/s ETA {_duration(eta)}")
    logging.info(line)
    return images_per_sec, line


def _duration(seconds):
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"
