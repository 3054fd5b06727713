"""Tests for byol_jax.checkpoint: round trip, retention, bad checkpoints."""
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from byol_jax import checkpoint as ckpt_lib


def _params(width=8):
  return {
      "byol/~/encoder/conv1": {
          "w": jnp.arange(3 * 3 * 3 * width, dtype=jnp.float32).reshape(3, 3, 3, width),
          "b": jnp.zeros((width,)),
      },
      "linear": {"w": jnp.full((width, 4), 0.5, jnp.bfloat16)},
  }


def _state(width=8):
  params = _params(width)
  lars = optax.lars(0.1, momentum=0.9)
  sgd = optax.sgd(0.1, momentum=0.9, nesterov=True)
  lars_state = lars.init(params)
  # Non-zero momentum, so the round trip checks real optimizer values.
  _, lars_state = lars.update(jax.tree.map(jnp.ones_like, params), lars_state, params)
  return {
      "params": params,
      "target": jax.tree.map(lambda x: x * 2, params),
      "opt": lars_state,
      "probe_opt": sgd.init(params["linear"]),
      "step": np.int64(17),
      "rng": jax.random.PRNGKey(3),
  }


def _snapshot(directory):
  """Every file under `directory` with its bytes and mtime."""
  root = pathlib.Path(directory)
  return {
      str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
      for p in sorted(root.rglob("*"))
      if p.is_file()
  }


def _largest_file(directory):
  files = [p for p in pathlib.Path(directory).rglob("*") if p.is_file()]
  return max(files, key=lambda p: p.stat().st_size)


@pytest.fixture
def saved(tmp_path):
  """A checkpoint directory with steps 10 and 20 saved."""
  directory = tmp_path / "checkpoints"
  checkpointer = ckpt_lib.Checkpointer(directory)
  checkpointer.save(10, _state(), {"position": 1})
  checkpointer.save(20, _state(), {"position": 2})
  return directory


def test_round_trip_keeps_values_dtypes_and_structure(saved):
  state = _state()
  restored, metadata = ckpt_lib.Checkpointer(saved).restore(state)
  assert metadata == {"position": 2}
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert isinstance(got, np.ndarray)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, np.asarray(want))
  assert restored["opt"][-1].trace["linear"]["w"].dtype == jnp.bfloat16


def test_restore_given_step(saved):
  _, metadata = ckpt_lib.Checkpointer(saved).restore(_state(), step=10)
  assert metadata == {"position": 1}


def test_keeps_last_k_and_latest_step(tmp_path):
  checkpointer = ckpt_lib.Checkpointer(tmp_path, keep=2)
  assert checkpointer.latest_step() is None
  for step in (1, 2, 3, 4):
    assert checkpointer.save(step, {"x": np.full((2,), step)}, {})
  assert checkpointer.latest_step() == 4
  assert checkpointer.all_steps() == [3, 4]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["3", "4"]
  assert ckpt_lib.Checkpointer(tmp_path).latest_step() == 4


def test_async_save_returns_before_the_write_and_close_waits_for_it(tmp_path, monkeypatch):
  """The state is on the host when save returns, so changing it afterwards changes nothing."""
  checkpointer = ckpt_lib.Checkpointer(tmp_path, async_save=True)
  state = {"x": np.arange(1000.0)}
  assert checkpointer.save(1, state, {"position": 1})
  state["x"][:] = -1  # The training loop's next step owns the arrays now.
  checkpointer.save(2, {"x": np.full(1000, 2.0)}, {"position": 2})  # Waits for step 1's write.
  checkpointer.close()
  restored, _ = ckpt_lib.Checkpointer(tmp_path).restore({"x": np.zeros(1000)}, step=1)
  np.testing.assert_array_equal(restored["x"], np.arange(1000.0))
  assert ckpt_lib.Checkpointer(tmp_path).all_steps() == [1, 2]


def test_existing_or_older_step_is_skipped_not_overwritten(saved):
  checkpointer = ckpt_lib.Checkpointer(saved)
  before = _snapshot(saved)
  other = jax.tree.map(lambda x: np.zeros_like(x), _state())
  assert not checkpointer.save(20, other, {"position": 99})
  assert not checkpointer.save(15, other, {"position": 99})
  assert _snapshot(saved) == before
  assert checkpointer.all_steps() == [10, 20]


def test_corrupt_checkpoint_raises_and_is_left_untouched(saved):
  data_file = _largest_file(saved / "20" / "state")
  data_file.write_bytes(data_file.read_bytes()[:20])
  before = _snapshot(saved)
  with pytest.raises(ckpt_lib.CheckpointError) as info:
    ckpt_lib.Checkpointer(saved).restore(_state())
  message = str(info.value)
  assert str(saved / "20") in message and "step 20" in message
  assert "corrupt" in message and "--workdir" in message
  assert "step 10" in message  # The way back to the previous checkpoint.
  assert _snapshot(saved) == before


def test_garbage_metadata_raises(saved):
  (saved / "20" / "state" / "_METADATA").write_bytes(b"\x00not json")
  (saved / "10" / "metadata" / "metadata").write_bytes(b"{trunc")
  checkpointer = ckpt_lib.Checkpointer(saved)
  for step in (10, 20):
    with pytest.raises(ckpt_lib.CheckpointError, match=f"step {step}"):
      checkpointer.restore(_state(), step=step)


def test_missing_state_metadata_raises(saved):
  (saved / "20" / "state" / "_METADATA").unlink()
  with pytest.raises(ckpt_lib.CheckpointError, match="step 20.*no readable metadata"):
    ckpt_lib.Checkpointer(saved).restore(_state())


@pytest.mark.parametrize("template,expected", [
    (lambda s: {**s, "extra": np.zeros(3)}, r"missing from the checkpoint: \['extra'\]"),
    (lambda s: {k: v for k, v in s.items() if k != "rng"},
     r"in the checkpoint are not in this run: \['rng'\]"),
    (lambda s: {**s, "params": _params(width=16)},
     r"\['params'\]\['byol/~/encoder/conv1'\]\['b'\] checkpoint \(8,\) "
     r"float32 vs run \(16,\) float32"),
    (lambda s: {**s, "step": np.int32(0)}, r"\['step'\] checkpoint \(\) int64 "
     r"vs run \(\) int32"),
])
def test_incompatible_template_names_the_difference(saved, template, expected):
  before = _snapshot(saved)
  with pytest.raises(ckpt_lib.CheckpointError, match=expected) as info:
    ckpt_lib.Checkpointer(saved).restore(template(_state()))
  message = str(info.value)
  assert f"{saved / '20'} (step 20)" in message
  assert "--workdir" in message
  assert _snapshot(saved) == before


def test_missing_step_raises(tmp_path, saved):
  with pytest.raises(ckpt_lib.CheckpointError, match=r"\[10, 20\]"):
    ckpt_lib.Checkpointer(saved).restore(_state(), step=15)
  with pytest.raises(ckpt_lib.CheckpointError, match="No checkpoint"):
    ckpt_lib.Checkpointer(tmp_path / "empty").restore(_state())


def test_interrupted_save_is_not_latest(saved):
  partial = saved / "30.orbax-checkpoint-tmp-1795430000"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "_METADATA").write_text("{")
  checkpointer = ckpt_lib.Checkpointer(saved)
  assert checkpointer.latest_step() == 20
  _, metadata = checkpointer.restore(_state())
  assert metadata == {"position": 2}
  # The step can still be saved for real afterwards.
  assert checkpointer.save(30, _state(), {"position": 3})
  assert ckpt_lib.Checkpointer(saved).restore(_state())[1] == {"position": 3}


def test_state_sharded_over_local_devices_is_gathered(tmp_path):
  mesh = jax.make_mesh((4,), ("d",))
  sharded = jax.device_put(np.arange(8.0), jax.NamedSharding(mesh, jax.P("d")))
  checkpointer = ckpt_lib.Checkpointer(tmp_path)
  checkpointer.save(1, {"x": sharded}, {})
  restored, _ = checkpointer.restore({"x": np.zeros((8,), np.float32)})
  np.testing.assert_array_equal(restored["x"], np.arange(8, dtype=np.float32))


_WORKER = """
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax
import numpy as np
jax.config.update("jax_cpu_collectives_implementation", "gloo")
port, pid, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2,
                           process_id=pid)
from byol_jax.checkpoint import Checkpointer
mesh = jax.make_mesh((4,), ("d",))
replicated = jax.device_put(np.arange(6, dtype=np.float32),
                            jax.NamedSharding(mesh, jax.P()))
state = {"global": replicated, "host": np.full((2, 3), pid, np.int32)}
checkpointer = Checkpointer(directory, keep=2)
saved = [checkpointer.save(step, state, {"step": step}) for step in (1, 2, 3)]
saved.append(checkpointer.save(3, state, {"step": 3}))
restored, metadata = checkpointer.restore(
    jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), state))
print("RESULT", saved, checkpointer.all_steps(), metadata,
      restored["global"].tolist(), restored["host"].tolist())
"""


def test_two_processes_save_once_and_both_restore(tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  script = tmp_path / "worker.py"
  script.write_text(_WORKER)
  directory = tmp_path / "checkpoints"
  env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parents[1])}
  command = lambda pid: [sys.executable, str(script), str(port), str(pid), str(directory)]
  workers = [
      subprocess.Popen(command(pid), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       env=env) for pid in (0, 1)
  ]
  outputs = [w.communicate(timeout=120)[0] for w in workers]
  results = [[l for l in out.splitlines() if l.startswith("RESULT")] for out in outputs]
  for out, result in zip(outputs, results):
    assert result, out[-3000:]
  # Both processes see the same checkpoints; the host arrays come from the
  # primary process, which alone wrote them.
  expected = ("RESULT [True, True, True, False] [2, 3] {'step': 3} "
              "[0.0, 1.0, 2.0, 3.0, 4.0, 5.0] [[0, 0, 0], [0, 0, 0]]")
  assert [r[0] for r in results] == [expected, expected]
  written = sorted(
      p.name for p in (directory / "3" / "state").iterdir() if p.name.startswith("ocdbt.process_"))
  assert written == ["ocdbt.process_0"]


def test_failed_restore_reports_once(tmp_path, monkeypatch):
  """A truncated data file gives the CheckpointError, not also one "Event loop is closed" report
  per read that orbax still had in flight when the first read failed."""
  reports = []
  monkeypatch.setattr(sys, "unraisablehook", reports.append)
  rng = np.random.default_rng(0)  # Incompressible, so the data file holds every array.
  state = {f"layer{i}": rng.standard_normal(25_000).astype(np.float32) for i in range(64)}
  checkpointer = ckpt_lib.Checkpointer(tmp_path)
  checkpointer.save(1, state, {})
  data_file = _largest_file(tmp_path / "1" / "state")
  data_file.write_bytes(data_file.read_bytes()[:data_file.stat().st_size * 9 // 10])
  with pytest.raises(ckpt_lib.CheckpointError, match="step 1"):
    checkpointer.restore(state)
  time.sleep(1)  # The reads in flight finish on other threads.
  assert not reports, [str(r.exc_value) for r in reports]


def test_a_failed_background_save_is_reported_with_its_cause_and_the_last_good_step(tmp_path):
  directory = tmp_path / "checkpoints"
  checkpointer = ckpt_lib.Checkpointer(directory, async_save=True)
  checkpointer.save(1, {"a": np.ones(3)}, {"note": "good"})
  checkpointer.wait()
  shutil.rmtree(directory)
  directory.write_text("a file where the checkpoints were")  # Every later write fails.
  with pytest.raises(ckpt_lib.CheckpointError,
                     match=r"failed \(NotADirectoryError.*last complete checkpoint is step 1"):
    checkpointer.save(2, {"a": np.ones(3)}, {"note": "lost"})
    checkpointer.wait()
