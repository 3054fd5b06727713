"""Tests for byol_jax.metric_writer: the record is cut back to the restored step on resume."""
import json

import tensorflow as tf

from byol_jax import config as config_lib
from byol_jax import metric_writer


def _steps_in_event_files(directory):
  """Each event file's steps of the scalar `loss`, by file."""
  steps = {}
  for path in sorted(tf.io.gfile.glob(f"{directory}/events.out.tfevents.*")):
    steps[path] = [
        event.step
        for event in tf.compat.v1.train.summary_iterator(path)
        if any(v.tag == "loss" for v in event.summary.value)
    ]
  return steps


def test_resume_keeps_the_record_up_to_the_restored_step(tmp_path):
  writer = metric_writer.MetricWriter(str(tmp_path))
  for step in range(1, 6):
    writer.write(step, {"loss": 10.0 - step})
  writer.close()
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 6, "lo')  # A line torn by a kill.

  writer = metric_writer.MetricWriter(str(tmp_path), start_step=3)  # Restored at step 3.
  writer.write(4, {"loss": 0.5})
  writer.close()
  with open(tmp_path / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert records == [{"step": 1, "loss": 9.0}, {"step": 2, "loss": 8.0}, {"step": 3, "loss": 7.0},
                     {"step": 4, "loss": 0.5}]
  # One event file, rebuilt from the kept records, then the new step.
  assert list(_steps_in_event_files(tmp_path / "tensorboard").values()) == [[1, 2, 3, 4]]


def test_fresh_start_drops_a_record_without_checkpoint(tmp_path):
  """A run killed before its first checkpoint starts again from step 0: nothing of it remains."""
  writer = metric_writer.MetricWriter(str(tmp_path))
  writer.write(1, {"loss": 1.0})
  writer.close()
  metric_writer.MetricWriter(str(tmp_path)).close()
  assert (tmp_path / "metrics.jsonl").read_text() == ""
  assert list(_steps_in_event_files(tmp_path / "tensorboard").values()) == [[]]


def test_progress_leaves_out_the_untimed_first_step(monkeypatch):
  clock = iter([100.0, 100.0, 102.0])
  monkeypatch.setattr(metric_writer.time, "time", lambda: next(clock))
  progress = metric_writer.Progress(total_steps=11, steps_per_epoch=10, global_batch_size=8,
                                    start_step=1)
  scalars = {
      "loss": 1.0, "lr": 0.1, "tau": 0.99, "positive_cosine": 0.5, "negative_cosine": 0.25,
      "within_view_cosine": 0.125
  }
  rate, line = progress.report(1, scalars)  # The clock started after step 1: nothing timed.
  assert rate is None and "img/s" not in line and line.endswith("view_cos 0.125")
  rate, line = progress.report(3, scalars)  # 2 steps of 8 images in 2 s.
  assert rate == 8.0 and line.endswith("8.0 img/s ETA 0h00m08s")


def test_hparams_are_in_every_event_file(tmp_path):
  hparams = metric_writer.flat_hparams(config_lib.base_config())
  assert hparams["eval.knn_k"] == 20 and hparams["view1.hue"] == 0.1
  assert hparams["max_steps"] == "None"
  for start_step in (0, 1):  # A resumed run rebuilds its event file: the hparams come again.
    writer = metric_writer.MetricWriter(str(tmp_path), start_step=start_step, hparams=hparams)
    writer.write(1, {"loss": 1.0})
    writer.close()
    (path,) = tf.io.gfile.glob(f"{tmp_path}/tensorboard/events.out.tfevents.*")
    tags = [
        v.tag for event in tf.compat.v1.train.summary_iterator(path) for v in event.summary.value
    ]
    assert "_hparams_/session_start_info" in tags
