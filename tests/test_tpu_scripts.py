"""The Cloud TPU scripts in experiments/tpu, checked without gcloud or a TPU.

A fake `gcloud` on PATH records the arguments it is given, so the tests see the exact commands the
scripts run; `--dry-run` must print them and run nothing. The worker-side script that launch.sh
writes (its resume loop) is run here against a fake `python` and a fake `tmux`.
"""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TPU = ROOT / "experiments" / "tpu"
SCRIPTS = ("create.sh", "setup.sh", "launch.sh", "delete.sh")
LAUNCH_ARGS = ("byol-v3", "europe-west4-a", "configs/byol_gn_ws.py", "gs://bkt/runs/gn-ws",
               "gs://bkt/tensorflow_datasets")

_FAKE_GCLOUD = f"""#!{sys.executable}
import json, os, shutil, sys
log = os.environ["FAKE_GCLOUD_LOG"]
with open(log, "a") as f:
  f.write(json.dumps(sys.argv[1:]) + "\\n")
for arg in sys.argv[1:]:  # Keep files it is asked to copy: the script deletes them afterwards.
  if arg.endswith(".tgz") and os.path.exists(arg):
    shutil.copy(arg, os.path.dirname(log))
"""


def _write_exe(path, text):
  path.write_text(text)
  path.chmod(0o755)


@pytest.fixture
def env(tmp_path):
  """An environment whose PATH starts with a fake gcloud that logs its argv as JSON lines."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _write_exe(bin_dir / "gcloud", _FAKE_GCLOUD)
  return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
              FAKE_GCLOUD_LOG=str(tmp_path / "gcloud.log"))


def _run(script, *args, env):
  return subprocess.run(["bash", str(TPU / script), *args], capture_output=True, text=True, env=env,
                        timeout=60, check=False)


def _gcloud_calls(env):
  log = pathlib.Path(env["FAKE_GCLOUD_LOG"])
  return [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []


def _command_of(call):
  """The --command=... value of a recorded `gcloud ... ssh` call."""
  (value,) = [a[len("--command="):] for a in call if a.startswith("--command=")]
  return value


@pytest.mark.parametrize("script", SCRIPTS)
def test_bash_syntax(script):
  subprocess.run(["bash", "-n", str(TPU / script)], check=True, timeout=30)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck():
  subprocess.run(["shellcheck", "-x", *(str(TPU / s) for s in SCRIPTS)], check=True, timeout=60,
                 cwd=ROOT)


@pytest.mark.parametrize("script,args", [
    ("create.sh", ("byol", "europe-west4-a")),
    ("create.sh", ("byol", "europe-west4-a", "v3-8", "--bogus")),
    ("create.sh", ("byol", "europe-west4-a", "v3-8", "--runtime")),
    ("setup.sh", ("byol",)),
    ("setup.sh", ("byol", "z", "extra")),
    ("launch.sh", LAUNCH_ARGS[:4]),
    ("launch.sh", ("byol", "z", "--stop", "extra")),
    ("delete.sh", ("byol",)),
    ("delete.sh", ()),
])
def test_wrong_arguments_exit_nonzero_with_usage(script, args, env):
  result = _run(script, *args, "--dry-run", env=env)
  assert result.returncode != 0
  assert "Usage:" in result.stderr
  assert _gcloud_calls(env) == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_exits_zero(script, env):
  result = _run(script, "--help", env=env)
  assert result.returncode == 0 and "Usage:" in result.stderr


@pytest.mark.parametrize("args,message", [
    (("byol", "z", "v3_8"), "ACCELERATOR_TYPE"),
    (("byol", "z", "v3-8", "--spot", "--preemptible"), "one of"),
    (("byol", "z", "tpu7x-8"), "--runtime"),
])
def test_create_rejects_bad_values(args, message, env):
  result = _run("create.sh", *args, "--dry-run", env=env)
  assert result.returncode != 0 and message in result.stderr


def test_create_dry_run_prints_and_runs_nothing(env):
  result = _run("create.sh", "byol-v3", "europe-west4-a", "v3-32", "--spot", "--dry-run", env=env)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == (
      "gcloud compute tpus tpu-vm create byol-v3 --zone=europe-west4-a --accelerator-type=v3-32 "
      "--version=tpu-ubuntu2204-base --spot")
  assert _gcloud_calls(env) == []


def test_create_runs_gcloud(env):
  result = _run("create.sh", "byol-v4", "us-central2-b", "v4-8", "--runtime", "v2-alpha-tpuv4",
                env=env)
  assert result.returncode == 0, result.stderr
  assert _gcloud_calls(env) == [[
      "compute", "tpus", "tpu-vm", "create", "byol-v4", "--zone=us-central2-b",
      "--accelerator-type=v4-8", "--version=v2-alpha-tpuv4"
  ]]


def test_create_queued(env):
  result = _run("create.sh", "q", "us-central2-b", "v4-32", "--queued", "--spot", env=env)
  assert result.returncode == 0, result.stderr
  assert _gcloud_calls(env) == [[
      "compute", "tpus", "queued-resources", "create", "q", "--node-id=q", "--zone=us-central2-b",
      "--accelerator-type=v4-32", "--runtime-version=tpu-ubuntu2204-base", "--spot"
  ]]


def test_create_passes_flags_after_double_dash_to_gcloud(env):
  result = _run("create.sh", "byol", "z", "v3-8", "--", "--labels=project=byol",
                "--description=a tpu", env=env)
  assert result.returncode == 0, result.stderr
  assert _gcloud_calls(env)[0][-2:] == ["--labels=project=byol", "--description=a tpu"]


@pytest.mark.parametrize("extra,expected", [
    ((), ["compute", "tpus", "tpu-vm", "delete", "byol", "--zone=z", "--quiet"]),
    (("--queued",),
     ["compute", "tpus", "queued-resources", "delete", "byol", "--zone=z", "--force", "--quiet"]),
])
def test_delete(extra, expected, env):
  dry = _run("delete.sh", "byol", "z", *extra, "--dry-run", env=env)
  assert dry.stdout.strip() == "gcloud " + " ".join(expected)
  assert _gcloud_calls(env) == []
  assert _run("delete.sh", "byol", "z", *extra, env=env).returncode == 0
  assert _gcloud_calls(env) == [expected]


def test_setup_copies_this_checkout_to_every_worker(env, tmp_path):
  dry = _run("setup.sh", "byol", "europe-west4-a", "--dry-run", env=env)
  assert dry.returncode == 0, dry.stderr
  assert "tpu-vm scp" in dry.stdout and "--worker=all" in dry.stdout
  assert _gcloud_calls(env) == []

  result = _run("setup.sh", "byol", "europe-west4-a", env=env)
  assert result.returncode == 0, result.stderr
  scp, ssh = _gcloud_calls(env)
  assert scp[:4] == ["compute", "tpus", "tpu-vm", "scp"]
  assert scp[5:] == ["byol:byol_jax_src.tgz", "--zone=europe-west4-a", "--worker=all"]
  assert ssh[:5] == ["compute", "tpus", "tpu-vm", "ssh", "byol"]
  assert "--worker=all" in ssh and "--zone=europe-west4-a" in ssh
  remote = _command_of(ssh)
  assert "tar -xzf ~/byol_jax_src.tgz" in remote
  assert "pip install -q -e ." in remote
  assert '"jax[tpu]==$jax_version"' in remote
  # The tarball holds the package and configs, but no venv, git data or caches.
  with tarfile.open(tmp_path / "byol_jax_src.tgz") as tar:
    names = {n.removeprefix("./") for n in tar.getnames()}
  assert {"setup.py", "byol_jax/main.py", "configs/byol_gn_ws.py"} <= names
  assert not any(n.split("/")[0] in (".venv", ".git") or "__pycache__" in n for n in names)


def test_setup_clones_a_url(env):
  result = _run("setup.sh", "byol", "z", "--repo-url", "https://example.com/me/byol jax.git",
                env=env)
  assert result.returncode == 0, result.stderr
  (ssh,) = _gcloud_calls(env)  # No scp.
  remote = _command_of(ssh)
  assert "git clone 'https://example.com/me/byol jax.git' ~/byol_jax" in remote
  assert "tar -xzf" not in remote


def test_launch_dry_run_shows_the_training_command(env):
  result = _run("launch.sh", *LAUNCH_ARGS, "--config.batch_size=1024", "--dry-run", env=env)
  assert result.returncode == 0, result.stderr
  out = result.stdout
  assert out.startswith("gcloud compute tpus tpu-vm ssh byol-v3 --zone=europe-west4-a "
                        "--worker=all --command=")
  assert ("python -m byol_jax.main --multihost_tpu --config=configs/byol_gn_ws.py "
          "--workdir=gs://bkt/runs/gn-ws "
          "--config.data_dir=gs://bkt/tensorflow_datasets --config.batch_size=1024") in out
  assert "tmux new-session -d -s byol" in out and "~/byol_runs/gn-ws.log" in out
  assert _gcloud_calls(env) == []


def test_launch_override_needs_equals_sign(env):
  result = _run("launch.sh", *LAUNCH_ARGS, "--config.batch_size", "1024", "--dry-run", env=env)
  assert result.returncode != 0 and "--config.batch_size=VALUE" in result.stderr


def test_launch_warns_about_local_workdir(env):
  args = list(LAUNCH_ARGS)
  args[3] = "/tmp/run"
  result = _run("launch.sh", *args, "--dry-run", env=env)
  assert result.returncode == 0 and "not on GCS" in result.stderr


def test_stop_sends_sigterm_on_all_workers(env):
  result = _run("launch.sh", "byol", "z", "--stop", env=env)
  assert result.returncode == 0, result.stderr
  (ssh,) = _gcloud_calls(env)
  assert "--worker=all" in ssh
  remote = _command_of(ssh)
  assert "touch ~/byol_runs/STOP" in remote and "kill -TERM" in remote


def _launch_on_fake_worker(env, tmp_path, exit_codes, *flags, stop=False):
  """Runs launch.sh's remote command on a fake worker whose python exits with `exit_codes`.

  With `stop`, python also creates ~/byol_runs/STOP, as `launch.sh --stop` does. The command runs
  under `sh` (dash on Debian/Ubuntu): it must not need bash as the workers' login shell.
  """
  assert _run("launch.sh", *LAUNCH_ARGS, *flags, env=env).returncode == 0
  remote = _command_of(_gcloud_calls(env)[-1])
  home = tmp_path / "home"
  venv_bin = home / "byol_jax" / ".venv" / "bin"
  venv_bin.mkdir(parents=True)
  if stop:
    (home / "stop_next").touch()
  (home / "codes").write_text("\n".join(map(str, exit_codes)) + "\n")
  # Each call logs its arguments, then exits with the next code in ~/codes.
  _write_exe(
      venv_bin / "python", """#!/usr/bin/env bash
echo "python $*" >> "$HOME/calls"
[ ! -e "$HOME/stop_next" ] || touch "$HOME/byol_runs/STOP"
code=$(head -n 1 "$HOME/codes"); tail -n +2 "$HOME/codes" > "$HOME/codes.rest"
mv "$HOME/codes.rest" "$HOME/codes"
exit "$code"
""")
  fake_bin = tmp_path / "worker_bin"
  fake_bin.mkdir()
  # tmux new-session -d -s NAME CMD: run CMD in the foreground so that the test can wait for it.
  _write_exe(
      fake_bin / "tmux", """#!/usr/bin/env bash
case $1 in new-session) exec bash -c "${@: -1}" ;; *) exit 1 ;; esac
""")
  worker_env = dict(env, HOME=str(home), BYOL_RELAUNCH_DELAY="0",
                    PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
  result = subprocess.run(["sh", "-c", remote], capture_output=True, text=True, env=worker_env,
                          timeout=60, check=False)
  calls = (home / "calls").read_text().splitlines() if (home / "calls").exists() else []
  return result, home, calls


def test_worker_runs_the_training_command_once(env, tmp_path):
  result, home, calls = _launch_on_fake_worker(env, tmp_path, [143, 0])
  assert result.returncode == 143, result.stderr
  assert calls == [
      "python -m byol_jax.main --multihost_tpu --config=configs/byol_gn_ws.py "
      "--workdir=gs://bkt/runs/gn-ws --config.data_dir=gs://bkt/tensorflow_datasets"
  ]
  assert (home / "byol_runs" / "gn-ws.exit").read_text().strip() == "143"
  assert "exit status 143" in (home / "byol_runs" / "gn-ws.log").read_text()
  assert not (home / "byol_runs" / "loop.pid").exists()


def test_resume_loop_relaunches_after_143_until_success(env, tmp_path):
  result, home, calls = _launch_on_fake_worker(env, tmp_path, [143, 143, 0], "--resume-loop")
  assert result.returncode == 0, result.stderr
  assert len(calls) == 3 and len(set(calls)) == 1  # The same command each time: it resumes.
  assert (home / "byol_runs" / "gn-ws.exit").read_text().strip() == "0"
  log = (home / "byol_runs" / "gn-ws.log").read_text()
  assert re.findall(r"attempt (\d)", log) == ["1", "2", "3"]


def test_resume_loop_stops_on_a_real_failure(env, tmp_path):
  result, home, calls = _launch_on_fake_worker(env, tmp_path, [143, 1, 0], "--resume-loop")
  assert result.returncode == 1 and len(calls) == 2
  assert (home / "byol_runs" / "gn-ws.exit").read_text().strip() == "1"


def test_resume_loop_honours_stop(env, tmp_path):
  result, _, calls = _launch_on_fake_worker(env, tmp_path, [143, 0], "--resume-loop", stop=True)
  assert result.returncode == 143 and len(calls) == 1


def test_launch_refuses_a_second_run(env, tmp_path):
  result, home, _ = _launch_on_fake_worker(env, tmp_path, [0])
  assert result.returncode == 0
  sleeper = subprocess.Popen(["sleep", "30"])  # Stands in for a loop that is still going.
  try:
    (home / "byol_runs" / "loop.pid").write_text(f"{sleeper.pid}\n")
    remote = _command_of(_gcloud_calls(env)[-1])
    again = subprocess.run(["bash", "-c", remote], capture_output=True, text=True,
                           env=dict(env, HOME=str(home)), timeout=30, check=False)
  finally:
    sleeper.kill()
    sleeper.wait()
  assert again.returncode == 1 and "already going" in again.stderr


@pytest.mark.parametrize("value", ['$(touch "$HOME/injected")', '`touch "$HOME/injected"`'])
def test_worker_logs_arguments_without_running_them(env, tmp_path, value):
  override = f"--config.note={value}"
  result, home, calls = _launch_on_fake_worker(env, tmp_path, [0], override)
  assert result.returncode == 0, result.stderr
  assert not (home / "injected").exists()  # Logging the command line ran nothing in it.
  assert calls == [
      "python -m byol_jax.main --multihost_tpu --config=configs/byol_gn_ws.py "
      f"--workdir=gs://bkt/runs/gn-ws --config.data_dir=gs://bkt/tensorflow_datasets {override}"
  ]
  log = (home / "byol_runs" / "gn-ws.log").read_text()
  assert "attempt 1: python -m byol_jax.main" in log and "touch" in log


# A worker's interpreter of version $VERSION: answers setup.sh's version check and makes venvs whose
# pip "installs" uv by copying a fake uv (in $HOME/bin) that logs its arguments.
_FAKE_WORKER_PYTHON = """#!/usr/bin/env bash
echo "$0 $*" >> "$HOME/calls"
case $1 in
  -c) [ "$VERSION" != 3.10 ] ;;
  -m) mkdir -p "$3/bin" && cp "$HOME/bin/pip" "$3/bin/pip" ;;
esac
"""
_FAKE_PIP = """#!/usr/bin/env bash
cp "$HOME/bin/uv" "$(dirname "$0")/uv"
"""
_FAKE_UV = """#!/usr/bin/env bash
echo "uv $*" >> "$HOME/calls"
"""


@pytest.mark.parametrize("version,uses_uv", [("3.10", True), ("3.11", False)])
def test_setup_makes_the_venv_with_python_3_11(env, tmp_path, version, uses_uv):
  home = tmp_path / "home"
  (home / "byol_jax").mkdir(parents=True)
  (home / "bin").mkdir()
  python = home / "bin" / "python_worker"
  for path, text in ((python, _FAKE_WORKER_PYTHON), (home / "bin" / "pip", _FAKE_PIP),
                     (home / "bin" / "uv", _FAKE_UV)):
    _write_exe(path, text)
  assert _run("setup.sh", "byol", "z", "--repo-url", "u", "--python", str(python),
              env=env).returncode == 0
  remote = _command_of(_gcloud_calls(env)[-1])
  # The lines that choose the interpreter: from `cd ~/byol_jax` up to the first pip install.
  venv_lines = remote[remote.index("cd ~/byol_jax"):remote.index(".venv/bin/python -m pip")]
  result = subprocess.run(["sh", "-c", "set -eu\n" + venv_lines], capture_output=True, text=True,
                          env=dict(env, HOME=str(home), VERSION=version), timeout=30, check=False)
  assert result.returncode == 0, result.stderr
  calls = (home / "calls").read_text()
  if uses_uv:
    assert "uv venv --seed --python 3.11 .venv" in calls
  else:
    assert f"{python} -m venv .venv" in calls and "uv " not in calls
