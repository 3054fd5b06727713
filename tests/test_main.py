"""End to end: `python -m byol_jax.main` on the tiny preset, as a user runs it, on 1 or 2 hosts."""
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from byol_jax import checkpoint
from byol_jax import config as config_lib
from byol_jax import export
from byol_jax import run
from byol_jax import workdir as workdir_lib
from train_helpers import load_config
from train_helpers import small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The smallest BYOL network the entry point trains (as train_helpers.small_config), for every run
# here: each property below holds for any network, and these runs all compile the same programs,
# which JAX's persistent cache (conftest.py) then serves to the processes after the first.
SMALL = {
    "depth": 10,
    "stem": "cifar",
    "width": 0.25,
    "projector_hidden_size": 32,
    "projection_size": 16,
    "predictor_hidden_size": 32,
    "batch_size": 8,
    "image_size": 16,
    "log_every": 1,
    # Runs on 1 x 4 and 2 x 2 devices differ by float summation order, which training
    # amplifies; the tiny preset's lr 2.0 grew that past rtol 1e-5 (2.5e-3 by step 20).
    "base_lr": 0.2
}
# The uninterrupted run that the interrupted ones are held against, and its length.
STEPS = 12
STRAIGHT = (f"--config.max_steps={STEPS}", "--config.checkpoint_every=1")


def _command(workdir, data_dir, *overrides, config="configs/byol_gn_ws.py:tiny"):
  return [
      sys.executable, "-m", "byol_jax.main", f"--config={config}", f"--workdir={workdir}",
      f"--config.data_dir={data_dir}", "--config.eval.enabled=false",
      *(f"--config.{key}={value}" for key, value in SMALL.items()), *overrides
  ]


def _env(devices=4):
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  return env


def _run(*args, devices=4, check=True, **kwargs):
  result = subprocess.run(_command(*args, **kwargs), cwd=ROOT, env=_env(devices),
                          capture_output=True, text=True, timeout=600)
  if check:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
  return result


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _complete_steps(workdir):
  return sorted(int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit())


def _saving(workdir):
  return any("orbax-checkpoint-tmp" in p.name for p in (workdir / "checkpoints").glob("*"))


def _event_steps(workdir, tag="loss"):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return [
      event.step
      for path in sorted((workdir / "tensorboard").glob("events.out.tfevents.*"))
      for event in tf.compat.v1.train.summary_iterator(str(path))
      if any(v.tag == tag for v in event.summary.value)
  ]


def _wait_for(condition, procs, deadline, output, poll=0.05):
  """Polls until `condition()`; fails with `output()` once a process ends or time runs out."""
  while not condition():
    assert all(p.poll() is None for p in procs) and time.time() < deadline, output()
    time.sleep(poll)


def _logged_a_step(workdir):
  return (workdir / "metrics.jsonl").exists() and bool(_metrics(workdir))


@pytest.fixture(scope="module")
def straight(tmp_path_factory, shapes10_dir):
  """An uninterrupted run of STEPS steps with a profile window and the kNN monitor every 4 steps
  (the interrupted runs held against it have none): (workdir, its output)."""
  workdir = tmp_path_factory.mktemp("straight") / "run"
  return workdir, _run(workdir, shapes10_dir, *STRAIGHT, "--config.profile_first_step=3",
                       "--config.profile_steps=2", "--config.knn_monitor.every_steps=4",
                       "--config.knn_monitor.bank_split=train[:200]",
                       "--config.knn_monitor.query_split=validation[:100]")


@pytest.mark.slow
def test_a_run_logs_each_step_once_on_stdout_and_writes_its_config_and_profile(straight):
  workdir, result = straight
  # One line per logged step, on stdout only; the libraries' INFO lines (orbax's saves) are out,
  # their warnings stay (orbax's "Waiting for previous save to complete" on a loaded machine).
  progress = [line for line in result.stdout.splitlines() if line.startswith("step ")]
  assert [line.split()[1] for line in progress] == [f"{s}/{STEPS}" for s in range(1, STEPS + 1)]
  assert "step 1/" not in result.stderr
  orbax_info = [
      line for line in result.stderr.splitlines()
      if line.startswith("I") and "checkpoint_manager.py" in line
  ]
  assert not orbax_info, orbax_info
  assert "img/s" not in progress[0] and "img/s" in progress[1]  # The first step compiles.
  assert "Compiling the train step" in result.stderr
  assert "Parameters: encoder " in result.stderr
  assert "Wrote a profile of steps 3-4" in result.stderr
  assert list((workdir / "tensorboard" / "plugins" / "profile").glob("*/*.xplane.pb"))
  assert json.loads((workdir / "config.json").read_text())["profile_first_step"] == 3
  records = _metrics(workdir)
  for record in records:
    assert {
        "step", "loss", "lr", "tau", "positive_cosine", "negative_cosine", "within_view_cosine",
        "projection_std", "probe_accuracy", "epoch"
    } <= set(record)
  assert "images_per_sec" not in records[0] and all("images_per_sec" in r for r in records[1:])
  monitored = [r["step"] for r in records if "knn_top1" in r]
  assert monitored == [4, 8, 12] == _event_steps(workdir, "knn_top1")
  assert all(0 <= r["knn_top1"] <= 1 for r in records if "knn_top1" in r)
  assert [line.split()[1] for line in progress if "knn_top1" in line] == ["4/12", "8/12", "12/12"]


@pytest.mark.slow
def test_preempted_and_killed_runs_resume_exactly_with_a_clean_record(tmp_path, shapes10_dir,
                                                                      straight):
  """SIGTERM saves and exits 143; then kill -9 during a save, and at a random moment; each rerun
  of the same command resumes from the last complete checkpoint, and the run ends as the
  uninterrupted one, bit for bit (same machine, same devices): every step logged once in
  metrics.jsonl and TensorBoard, the same metrics and the same exported encoder."""
  workdir = tmp_path / "interrupted"
  rng = np.random.default_rng(0)
  kills = []  # (complete checkpoint steps at the kill, whether a save was under way)
  for attempt in ("sigterm", "kill_during_save", "kill_at_random"):
    restored = _complete_steps(workdir)[-1] if attempt != "sigterm" else 0
    proc = subprocess.Popen(_command(workdir, shapes10_dir, *STRAIGHT), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    wait_for = functools.partial(_wait_for, procs=[proc], deadline=deadline,
                                 output=lambda: proc.communicate()[1][-3000:])
    if attempt == "sigterm":  # Once a step is logged.
      wait_for(lambda: _logged_a_step(workdir))
      proc.send_signal(signal.SIGTERM)
      stderr = proc.communicate(timeout=120)[1]
      assert proc.returncode == 143, stderr[-3000:]
      assert "Stop requested (SIGTERM)" in stderr
      assert _complete_steps(workdir)[-1] == _metrics(workdir)[-1]["step"] < STEPS
      continue
    # Once this run has saved a step of its own: during its next save, or after a random delay.
    wait_for(lambda: _complete_steps(workdir)[-1] > restored, poll=0.01)
    if attempt == "kill_during_save":
      wait_for(lambda: _saving(workdir), poll=0.002)
    else:
      time.sleep(rng.uniform(0, 1.0))
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.kill()
    stderr = proc.communicate()[1]
    kills.append((_complete_steps(workdir), _saving(workdir)))
    # No partial checkpoint restored: the latest complete one.
    assert f"Resumed from {workdir}/checkpoints at step {restored}." in stderr, kills
  assert kills[0][1], "the kill aimed at a save came after it"
  result = _run(workdir, shapes10_dir, *STRAIGHT)
  assert f"Resumed from {workdir}/checkpoints at step {kills[-1][0][-1]}" in result.stderr, kills

  reference, _ = straight
  a, b = _metrics(reference), _metrics(workdir)
  assert [m["step"] for m in b] == list(range(1, STEPS + 1)), kills
  assert _event_steps(workdir) == list(range(1, STEPS + 1)), kills
  for key in ("loss", "lr", "tau", "grad_norm", "probe_loss", "positive_cosine"):
    np.testing.assert_array_equal([m[key] for m in a], [m[key] for m in b], err_msg=key)
  with np.load(reference / "encoder" / "encoder.npz") as one, \
       np.load(workdir / "encoder" / "encoder.npz") as other:
    assert set(one) == set(other)
    for key in one:
      np.testing.assert_array_equal(one[key], other[key], err_msg=key)


@pytest.mark.slow
def test_a_changed_config_a_second_run_and_a_fresh_start_lose_nothing(tmp_path, shapes10_dir,
                                                                      straight):
  workdir = tmp_path / "copy"
  shutil.copytree(straight[0], workdir)

  def contents():
    return {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file() and "lock" not in p.name}

  before = contents()
  result = _run(workdir, shapes10_dir, *STRAIGHT, "--config.norm=ln", check=False)
  assert result.returncode == 1, result.stderr[-3000:]
  assert "ConfigChangedError" in result.stderr and "norm: 'gn' -> 'ln'" in result.stderr
  assert "--allow_config_change" in result.stderr
  held = workdir_lib.Lock(workdir)  # As a run still training there would.
  result = _run(workdir, shapes10_dir, *STRAIGHT, check=False)
  held.release()
  assert result.returncode == 1 and f"pid {os.getpid()}" in result.stderr, result.stderr[-3000:]
  assert contents() == before

  shutil.move(workdir / "checkpoints", tmp_path / "moved_aside")  # A fresh start in a used workdir.
  _run(workdir, shapes10_dir, "--config.max_steps=2", "--config.checkpoint_every=1")
  (previous,) = (workdir / "previous").iterdir()
  for path, data in before.items():
    if "checkpoints" not in path.parts:
      assert (previous / path.relative_to(workdir)).read_bytes() == data, path
  assert [m["step"] for m in _metrics(workdir)] == [1, 2]


def _union_of_host_slices(plan, start_step):
  """Batches for one process: at every step, the union of the slices 2 hosts x 2 devices read."""
  return _Union([run.host_batches(plan, start_step, p, 2, 2) for p in range(2)])


class _Union:
  """Step by step, the union of the hosts' slices; like the pipeline's iterators, it counts
  skipped images (none)."""
  num_skipped = 0

  def __init__(self, hosts):
    self._steps = zip(*hosts)

  def __iter__(self):
    return self

  def __next__(self):
    slices = next(self._steps)
    return {k: np.concatenate([s[k] for s in slices]) for k in slices[0]}


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _two_processes(workdir, data_dir, *overrides, preempt=False, hang_at_step=None):
  """Runs 2 processes x 2 CPU devices on localhost (gloo); returns their exit codes and logs.

  With `preempt`, only process 1 gets SIGTERM, once a step is logged. With `hang_at_step`, process
  1 gets SIGSTOP once that step's checkpoint is complete (a hung host: its connections stay open, so
  no collective with it fails), process 0 has 60 s to exit, and then process 1 gets SIGKILL.
  """
  port = _free_port()
  # No persistent compilation cache: only process 0 writes it, so with a warm cache process 0
  # would reach the first collective long before process 1 (which compiles its per-host programs),
  # past gloo's 30 s connect timeout.
  env = {**_env(devices=2), "JAX_ENABLE_COMPILATION_CACHE": "false"}
  logs = [workdir.parent / f"{workdir.name}.{i}.log" for i in range(2)]
  procs = []
  for i, log in enumerate(logs):
    command = _command(workdir, data_dir, *overrides, f"--coordinator_address=127.0.0.1:{port}",
                       "--num_processes=2", f"--process_id={i}", "--peer_timeout_seconds=10",
                       config="configs/byol.py:tiny")
    with open(log, "w") as f:
      procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT))
  deadline = time.time() + 600
  try:
    if preempt:
      _wait_for(lambda: _logged_a_step(workdir), procs, deadline, output=lambda: logs, poll=0.2)
      procs[1].send_signal(signal.SIGTERM)
    if hang_at_step:
      _wait_for(lambda: hang_at_step in _complete_steps(workdir), procs, deadline,
                output=lambda: logs)
      procs[1].send_signal(signal.SIGSTOP)
      procs[0].wait(timeout=60)
      procs[1].kill()
    for p in procs:
      p.wait(timeout=max(deadline - time.time(), 1))
  finally:
    for p in procs:  # A host whose peer died can wait in a collective forever.
      if p.poll() is None:
        p.kill()
  return [p.returncode for p in procs], [log.read_text() for log in logs]


@pytest.mark.slow
def test_two_processes_stop_together_survive_a_lost_peer_and_equal_one_process(
    tmp_path, shapes10_dir):
  """2 hosts x 2 devices through the entry point, with BN's statistics spanning the hosts:

  1. SIGTERM on host 1 only: both save the same step and exit 143.
  2. Resumed, then host 1 hangs (SIGSTOP): host 0 exits within 60 s with a message, not a
     traceback or a hang, once host 1 has been silent for --peer_timeout_seconds. Parts 1 and 3
     check that a live host is never called lost.
  3. Both rerun: they resume from the last checkpoint they both finished and end equal to one
     process of 4 devices fed the same batches. Each host reads its own shard of the data in its
     own order, so that process is fed the union of the hosts' slices; augmentations are keyed by
     the global position, so they match too.
  """
  steps = 8
  args = (f"--config.max_steps={steps}", "--config.checkpoint_every=1")
  workdir = tmp_path / "two_hosts"
  codes, logs = _two_processes(workdir, shapes10_dir, *args, preempt=True)
  assert codes == [143, 143], "\n".join(log[-3000:] for log in logs)
  stopped_at = checkpoint.Checkpointer(str(workdir / "checkpoints")).latest_step()
  assert stopped_at == _metrics(workdir)[-1]["step"] < steps - 1

  codes, logs = _two_processes(workdir, shapes10_dir, *args, hang_at_step=stopped_at + 1)
  assert codes == [1, -signal.SIGKILL], logs[0][-3000:]
  assert all(f"Resumed from {workdir}/checkpoints at step {stopped_at}." in log for log in logs)
  # A stopped process stops both its ticks and its steps: either is reported, after 10 s.
  assert ("Process 0 of 2 lost another process of this run (process 1 " in logs[0] and
          "for 10 s" in logs[0]), logs[0][-3000:]
  assert "Traceback" not in logs[0], logs[0][-3000:]
  complete = _complete_steps(workdir)[-1]

  codes, logs = _two_processes(workdir, shapes10_dir, *args)
  assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
  assert all(f"Resumed from {workdir}/checkpoints at step {complete}." in log for log in logs)
  # Process 0 alone logs: every step once, one progress line per step.
  metrics = _metrics(workdir)
  assert [m["step"] for m in metrics] == list(range(1, steps + 1))
  progress = [[line for line in log.splitlines() if line.startswith("step ")] for log in logs]
  assert len(progress[0]) == steps - complete and not progress[1]

  config = load_config("byol", "tiny")
  config.update(dict(SMALL, data_dir=shapes10_dir, max_steps=steps))  # As _command sets them.
  config.eval.enabled = False
  plan = run.plan(config)
  outcome = run.train(plan, str(tmp_path / "reference"), batches=_union_of_host_slices)
  assert outcome.completed
  run.export_encoder(plan, str(tmp_path / "reference"), outcome.state)
  # 2 x 2 and 1 x 4 devices sum in different orders, and training amplifies the float32
  # difference: equal to 1e-5 over the first steps, then growing (with ResNet-18, which these runs
  # trained before: 5.7e-4 by step 7, 1.03e-3 by step 8 in one CI run, 3.0e-3 by step 10). Wrong
  # sharding or statistics differ from step 1 on.
  losses = [m["loss"] for m in metrics]
  reference_losses = [m["loss"] for m in _metrics(tmp_path / "reference")]
  np.testing.assert_allclose(losses[:3], reference_losses[:3], rtol=1e-5)
  np.testing.assert_allclose(losses, reference_losses, rtol=3e-3)
  with np.load(workdir / "encoder" / "encoder.npz") as hosts, \
       np.load(tmp_path / "reference" / "encoder" / "encoder.npz") as one:
    assert set(hosts) == set(one)
    for key in one:
      # The norms' offsets and scales take the raw lr (LARS leaves them out), so they drift most:
      # 1.25e-2 apart after 10 steps of ResNet-18 (the stem norm's offset).
      np.testing.assert_allclose(hosts[key], one[key], rtol=1e-2, atol=2e-2, err_msg=key)


def test_overrides_and_bad_values(tmp_path, shapes10_dir):
  """Bad values stop with one message and status 1, no traceback."""
  result = _run(tmp_path / "bad", shapes10_dir, "--config.norm=batchnorm", check=False)
  assert result.returncode == 1
  assert ("config.norm='batchnorm' is not valid; choose one of ('bn', 'ln', 'gn', 'none', "
          "'bn_stopgrad')") in result.stderr
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert not (tmp_path / "bad").exists()  # Failed before any work started.
  result = _run(tmp_path / "odd", shapes10_dir, "--config.batch_size=30", check=False)
  assert result.returncode == 1
  assert "config.batch_size=30 is not divisible by the 4 devices" in result.stderr
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  result = _run(tmp_path / "peers", shapes10_dir, "--peer_timeout_seconds=0", check=False)
  assert result.returncode == 1
  assert "--peer_timeout_seconds=0: give a positive number of seconds." in result.stderr
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert not (tmp_path / "peers").exists()


def _copy(workdir, tmp_path):
  copy = tmp_path / "copy"
  shutil.copytree(workdir, copy)
  return copy


@pytest.mark.slow
def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path, shapes10_dir,
                                                                      straight):
  """A run resumed with a huge learning rate overflows within a few steps: status 1, the step
  named, and the last good checkpoint left as it was."""
  workdir = _copy(straight[0], tmp_path)
  last = _complete_steps(workdir)[-1]
  before = {
      p: p.read_bytes() for p in (workdir / "checkpoints" / str(last)).rglob("*") if p.is_file()
  }
  result = _run(workdir, shapes10_dir, f"--config.max_steps={STEPS + 30}",
                "--config.checkpoint_every=1000", "--config.base_lr=1e30", "--allow_config_change",
                check=False)
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Non-finite loss or gradient at step" in result.stderr
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert f"last good checkpoint (step {last})" in result.stderr
  assert {
      p: p.read_bytes() for p in (workdir / "checkpoints" / str(last)).rglob("*") if p.is_file()
  } == before


@pytest.mark.slow
def test_corrupt_checkpoint_is_reported_and_left_alone(tmp_path, shapes10_dir, straight):
  """Garbled metadata, then a truncated data file: each gives its one message, status 1."""
  workdir = _copy(straight[0], tmp_path)
  last = workdir / "checkpoints" / str(_complete_steps(workdir)[-1])
  victim = next(p for p in last.rglob("*") if p.is_file() and p.name == "_METADATA")
  original = victim.read_bytes()
  victim.write_text("{not json")
  result = _run(workdir, shapes10_dir, *STRAIGHT, check=False)
  assert result.returncode == 1
  assert "is corrupt or unreadable" in result.stderr and f"step {last.name}" in result.stderr
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert victim.read_text() == "{not json"
  victim.write_bytes(original)
  data = max((p for p in (last / "state").rglob("*") if p.is_file()),
             key=lambda p: p.stat().st_size)
  data.write_bytes(data.read_bytes()[:data.stat().st_size * 2 // 3])
  result = _run(workdir, shapes10_dir, *STRAIGHT, check=False)
  assert result.returncode == 1
  assert result.stderr.count("is corrupt or unreadable") == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr and "Event loop is closed" not in result.stderr


@pytest.mark.slow
def test_bn_stats_override_trains_and_evaluates(tmp_path, shapes10_dir):
  """--config.norm=none --config.init=bn_stats from the vanilla config; eval.json at the end."""
  workdir = tmp_path / "bn_stats"
  result = _run(workdir, shapes10_dir, "--config.norm=none", "--config.init=bn_stats",
                "--config.max_steps=2", "--config.eval.enabled=true",
                "--config.eval.linear_epochs=1", config="configs/byol.py:tiny")
  assert "Modified init" in result.stderr
  assert all(np.isfinite(m["loss"]) for m in _metrics(workdir))
  with open(workdir / "eval.json") as f:
    results = json.load(f)
  assert {"top1", "knn_top1", "random_init_top1", "random_init_knn_top1"} <= set(results)
  assert all(0 <= results[k] <= 1 for k in ("top1", "knn_top1", "random_init_top1"))
  assert "linear top-1" in result.stdout and "random-init encoder" in result.stdout
  assert (workdir / "tensorboard").is_dir()
  # The exported encoder, evaluated on its own by the same protocol, scores what the run did.
  again = subprocess.run([
      sys.executable, "-m", "byol_jax.linear_eval", "--config=configs/linear_eval.py:tiny",
      f"--config.encoder_dir={workdir / 'encoder'}", f"--workdir={tmp_path / 'eval'}",
      f"--config.data_dir={shapes10_dir}", "--config.eval.linear_epochs=1"
  ], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  separate = json.loads((tmp_path / "eval" / "eval.json").read_text())
  assert (separate["top1"], separate["knn_top1"]) == (results["top1"], results["knn_top1"])
  assert f"linear top-1 {results['top1']:.4f}" in again.stdout


def _image_folder(folder, count):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  folder.mkdir(parents=True)
  for i in range(count):
    image = np.random.default_rng(i).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(image))


@pytest.mark.slow
def test_flat_folder_with_corrupt_files_stops_or_skips_and_counts(tmp_path, shapes10_dir):
  """A flat folder trains without a probe and skips the evaluation; a file that is not an image
  stops the run before it starts (message, no traceback), or with skip_corrupt_images is left
  out, and an undecodable one is skipped when reached, both counted in the log and metrics."""
  folder = tmp_path / "images"
  _image_folder(folder, 16)
  (folder / "notes.png").write_text("not an image")
  (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 a JPEG header, then no JPEG")
  # The tiny preset's kNN monitor reads shapes10's splits: off.
  args = (f"--config.dataset=folder:{folder}", "--config.max_steps=3", "--config.eval.enabled=true",
          "--config.knn_monitor.every_steps=0")
  result = _run(tmp_path / "stopped", shapes10_dir, *args, check=False)
  assert result.returncode == 1, result.stderr[-3000:]
  assert "notes.png" in result.stderr and "--config.skip_corrupt_images=true" in result.stderr
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  # Failed before any work: the workdir holds only the run's lock.
  assert [p.name for p in (tmp_path / "stopped").iterdir()] == ["lock.0"]

  workdir = tmp_path / "skipped"
  result = _run(workdir, shapes10_dir, *args, "--config.skip_corrupt_images=true")
  assert "Skipping the evaluation" in result.stderr and not (workdir / "eval.json").exists()
  assert (workdir / "encoder" / "encoder.npz").exists()
  metrics = _metrics(workdir)
  assert [m["step"] for m in metrics] == [1, 2, 3]
  assert not any("probe_accuracy" in m for m in metrics)
  # 3 steps of 8 read 24 images of the 17 left: broken.jpg is reached at least once.
  assert metrics[-1]["skipped_images"] >= 2
  assert f"skipped_images {metrics[-1]['skipped_images']:.0f}" in result.stdout


def test_single_class_folder_warns(tmp_path, caplog):
  _image_folder(tmp_path / "images" / "cats", 20)  # 10% of 20 is a test split of 2.
  config = small_config(dataset=f"folder:{tmp_path / 'images'}")
  config.knn_monitor.every_steps = 0  # The tiny preset's monitor reads shapes10's splits.
  run.plan(config)
  assert "has a single class" in caplog.text
