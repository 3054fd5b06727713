"""Owning a workdir: the lock, what is set aside instead of deleted, refusals that name the fix."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from byol_jax import config as config_lib
from byol_jax import files
from byol_jax import run
from byol_jax import workdir
from train_helpers import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_second_lock_names_the_first_and_a_released_lock_is_free(tmp_path):
  first = workdir.Lock(tmp_path)
  with pytest.raises(workdir.WorkdirError, match=f"pid {os.getpid()}.*delete the lock file"):
    workdir.Lock(tmp_path)
  workdir.Lock(tmp_path, process_index=1).release()  # Another process of the same run.
  first.release()
  workdir.Lock(tmp_path).release()


def test_a_killed_owner_leaves_no_stuck_lock(tmp_path):
  holder = subprocess.Popen([
      sys.executable, "-c", "import sys, time; from byol_jax import workdir; "
      f"lock = workdir.Lock({str(tmp_path)!r}); print('held', flush=True); time.sleep(60)"
  ], cwd=ROOT, stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == "held"
  with pytest.raises(workdir.WorkdirError, match=f"pid {holder.pid}"):
    workdir.Lock(tmp_path)
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  workdir.Lock(tmp_path).release()


def test_a_remote_lock_is_refreshed_and_taken_over_only_when_stale(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir.files, "is_local", lambda path: False)  # GCS's rules, locally.
  first = workdir.Lock(tmp_path)
  with pytest.raises(workdir.WorkdirError, match="last refreshed 0 s ago"):
    workdir.Lock(tmp_path)
  owner = json.loads(first.path.read_text())
  owner["updated"] -= workdir.STALE_AFTER_S + 1
  first.path.write_text(json.dumps(owner))
  second = workdir.Lock(tmp_path)  # A dead run's lock.
  assert json.loads(second.path.read_text())["updated"] > owner["updated"]
  second.release()
  assert not second.path.exists()


def test_a_workdir_that_is_a_file_is_refused_before_any_work(tmp_path):
  path = tmp_path / "file"
  path.write_text("")
  with pytest.raises(workdir.WorkdirError, match="is a file, not a directory"):
    workdir.check_writable(path)
  workdir.check_writable(tmp_path / "new" / "dir")
  assert (tmp_path / "new" / "dir").is_dir() and not list((tmp_path / "new" / "dir").iterdir())


def test_set_aside_moves_or_copies_every_byte(tmp_path):
  (tmp_path / "tensorboard" / "plugins").mkdir(parents=True)
  (tmp_path / "tensorboard" / "events.out.tfevents.1").write_bytes(b"events")
  (tmp_path / "tensorboard" / "plugins" / "trace").write_bytes(b"trace")
  (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
  copied = workdir.set_aside(tmp_path, ("metrics.jsonl", "eval.json"), "a test", copy=True)
  assert (copied / "metrics.jsonl").read_text() == (tmp_path / "metrics.jsonl").read_text()
  assert not (copied / "eval.json").exists()
  moved = workdir.set_aside(tmp_path, workdir.RECORD, "a test")
  assert moved != copied and moved.parent == tmp_path / workdir.PREVIOUS
  assert (moved / "tensorboard" / "plugins" / "trace").read_bytes() == b"trace"
  assert (moved / "tensorboard" / "events.out.tfevents.1").read_bytes() == b"events"
  assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "metrics.jsonl").exists()
  assert workdir.set_aside(tmp_path, workdir.RECORD, "nothing left") is None


def test_atomic_writes_leave_no_temporary_file_and_keep_the_mode(tmp_path):
  path = tmp_path / "eval.json"
  files.write_atomically(path, "old")
  assert oct(path.stat().st_mode & 0o777) == oct(0o644)
  path.chmod(0o640)
  files.write_atomically(path, b"new")
  assert path.read_text() == "new" and oct(path.stat().st_mode & 0o777) == oct(0o640)
  with pytest.raises(TypeError):
    files.write_atomically(path, 3)  # Fails after the temporary file exists: it is removed.
  assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]


def test_config_changes_that_compute_something_else_are_named_and_others_allowed():
  saved = json.loads(load_config("byol").to_json())
  now = load_config("byol")
  now.norm, now.base_lr, now.log_every, now.eval.knn_k = "gn", 0.3, 7, 5
  assert config_lib.changed_keys(saved, json.loads(
      now.to_json())) == {"base_lr": (0.2, 0.3), "norm": ("bn", "gn")}
  assert run.config_fingerprint(now) != run.config_fingerprint(load_config("byol"))
  now.norm, now.base_lr = "bn", 0.2
  assert run.config_fingerprint(now) == run.config_fingerprint(load_config("byol"))


def test_hosts_that_disagree_are_named_fact_by_fact():
  same = np.array([[100, 1000, 50000, 0, 12345]] * 3)
  assert run.hosts_disagreement(same) is None
  differ = same.copy()
  differ[2, 0], differ[1, 4] = 0, 999
  message = run.hosts_disagreement(differ)
  assert "restored step: process 0 100, process 1 100, process 2 0" in message
  assert "config fingerprint: process 0 12345, process 1 999" in message
  assert "total steps" not in message and "shared --workdir" in message


@pytest.mark.parametrize("key, value, expected", [
    ("linear_batch_size", 0, "config.eval.linear_batch_size=0 must be a positive integer"),
    ("knn_k", 0, "config.eval.knn_k=0 must be a positive integer"),
    ("knn_temperature", 0.0, "config.eval.knn_temperature=0.0 must be > 0"),
    ("crop_fraction", 1.5, r"config.eval.crop_fraction=1.5 must be in \(0, 1\]"),
])
def test_bad_eval_values_stop_before_any_work(key, value, expected):
  config = load_config("byol")
  config.eval[key] = value
  with pytest.raises(config_lib.ConfigError, match=expected):
    config_lib.validate(config)


def test_gn_groups_that_do_not_divide_a_layer_are_named_early():
  config = load_config("byol", "tiny")
  config.norm, config.gn_groups = "gn", 32  # Width 1/4: the stem has 16 channels.
  with pytest.raises(config_lib.ConfigError, match="gn_groups=32 does not divide .*16-channel"):
    config_lib.validate(config)
  config.gn_groups = 16
  config_lib.validate(config)
  config.projector_hidden_size = 200
  with pytest.raises(config_lib.ConfigError, match="projector_hidden_size"):
    config_lib.validate(config)
