r"""Benchmarks the host loop of a multi-process run: steps/s of 2 processes x 2 CPU devices.

The model is the smallest one the entry point trains (ResNet-18 at width 1/4, 8 px, batch 8), with
GN + WS: without cross-replica BN a step's only collectives are the gradient and metric means, so
the host's time per step shows next to the devices'. Each checkout given in --repos runs the
same `byol_jax.main` command, alternately, --repeats times; the rate is the images/s that the run
logs over its last `--steps / 2` steps (compilation and warm-up left out). Then it times the
per-step stop check alone, the old one (a process_allgather) against the new one (JAX's preemption
sync point), in 2 processes.

    git worktree add /tmp/before <commit>     # e.g. the loop that gathered on every step
    python -m experiments.benchmarks.bench_host_loop --repos=/tmp/before,.

Prints a Markdown table and writes it, with its JSON, to experiments/results/host_loop.{md,json}.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import experiments
from experiments import machine

RESULTS = experiments.RESULTS
_SMALL = ("--config.stem=cifar", "--config.width=0.25", "--config.image_size=8",
          "--config.batch_size=8", "--config.projector_hidden_size=32",
          "--config.projection_size=16", "--config.predictor_hidden_size=32",
          "--config.eval.enabled=false", "--config.checkpoint_every=100000")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _commit(repo):
  return subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True,
                        text=True, check=True).stdout.strip()


def run_once(repo, steps, data_dir):
  """Images/s over the last half of one 2-process run of `repo`'s entry point."""
  port = _free_port()
  env = {
      **os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
      "JAX_ENABLE_COMPILATION_CACHE": "false", "JAX_PLATFORMS": "cpu"
  }
  with tempfile.TemporaryDirectory() as workdir:
    procs = [
        subprocess.Popen([
            sys.executable, "-m", "byol_jax.main", "--config=configs/byol_gn_ws.py:tiny",
            f"--workdir={workdir}", f"--config.data_dir={data_dir}", f"--config.max_steps={steps}",
            f"--config.log_every={steps // 2}", *_SMALL, f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2", f"--process_id={i}"
        ], cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    errors = [p.communicate(timeout=1200)[1] for p in procs]
    if any(p.returncode for p in procs):
      sys.exit(f"A run of {repo} failed:\n" + "\n".join(e[-3000:] for e in errors))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      return [json.loads(line) for line in f][-1]["images_per_sec"]


def _time_calls(process_id, port, calls):
  """In one of 2 processes: the mean seconds of a per-step stop check, old and new kind."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
  checks = {
      "process_allgather of the stop flag (before)":
          lambda step: multihost_utils.process_allgather(np.array([0, 0], np.int64)),
      "reached_preemption_sync_point (after)":
          multihost_utils.reached_preemption_sync_point,
  }
  seconds = {}
  for name, check in checks.items():
    check(0)  # Warm-up (the first gather compiles).
    start = time.perf_counter()
    for step in range(1, calls + 1):
      check(step)
    seconds[name] = (time.perf_counter() - start) / calls
  if process_id == 0:
    print(json.dumps(seconds), flush=True)


def call_costs(calls):
  """{check: seconds per call} measured in process 0 of 2 CPU processes."""
  port = _free_port()
  env = {
      **os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"
  }
  code = (f"import sys; from experiments.benchmarks import bench_host_loop as b; "
          f"b._time_calls(int(sys.argv[1]), {port}, {calls})")
  procs = [
      subprocess.Popen([sys.executable, "-c", code, str(i)], env=env, cwd=experiments.REPO,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)
  ]
  outputs = [p.communicate(timeout=600) for p in procs]
  if any(p.returncode for p in procs):
    sys.exit("The call timing failed:\n" + "\n".join(e[-3000:] for _, e in outputs))
  return json.loads(outputs[0][0].strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repos", default=".", help="comma-separated checkouts to compare")
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--data_dir", default=None, help="tfds directory (default: tfds's own)")
  parser.add_argument("--calls", type=int, default=200,
                      help="calls of each per-step stop check timed on their own")
  args = parser.parse_args()
  costs = call_costs(args.calls)
  repos = [os.path.abspath(r) for r in args.repos.split(",")]
  data_dir = args.data_dir or os.path.expanduser("~/tensorflow_datasets")
  rates = {repo: [] for repo in repos}
  for _ in range(args.repeats):
    for repo in repos:  # Alternating, so a slow spell of a shared machine hits both.
      rates[repo].append(run_once(repo, args.steps, data_dir))
      print(f"{repo}: {rates[repo][-1]:.1f} images/s", flush=True)
  rows = [{
      "repo": repo, "commit": _commit(repo), "images_per_sec": rates[repo],
      "median_steps_per_sec": statistics.median(rates[repo]) / 8
  } for repo in repos]
  lines = [
      f"# Host loop, 2 processes x 2 CPU devices ({machine.cpu_name()}, "
      f"{os.cpu_count()} cores)", "",
      f"`python -m experiments.benchmarks.bench_host_loop --repos=... --steps={args.steps} "
      f"--repeats={args.repeats}`: ResNet-18 at width 1/4, 8 px, global batch 8; the rate of "
      "each run's last half. GN + WS (configs/byol_gn_ws.py:tiny).", "",
      "| commit | steps/s (median) | ms/step | images/s per run |", "| --- | --- | --- | --- |"
  ]
  for row in rows:
    lines.append(f"| {row['commit']} | {row['median_steps_per_sec']:.2f} | "
                 f"{1000 / row['median_steps_per_sec']:.1f} | " +
                 ", ".join(f"{r:.1f}" for r in row["images_per_sec"]) + " |")
  lines += [
      "", f"The per-step stop check on its own (process 0 of 2, mean of {args.calls} calls):", "",
      "| check | µs per step |", "| --- | --- |"
  ]
  lines += [f"| {name} | {seconds * 1e6:.2f} |" for name, seconds in costs.items()]
  text = "\n".join(lines) + "\n"
  print(text)
  (RESULTS / "host_loop.md").write_text(text)
  (RESULTS / "host_loop.json"
  ).write_text(json.dumps({"runs": rows, "stop_check_seconds": costs}, indent=1) + "\n")


if __name__ == "__main__":
  main()
