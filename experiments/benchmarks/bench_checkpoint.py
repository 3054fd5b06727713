r"""Benchmarks how long a checkpoint save holds up the training loop, synchronous against async.

The state is a full-size one (configs/byol.py: ResNet-50 BYOL, online + target + LARS momentum +
probe), filled with random values on the host, saved through `checkpoint.Checkpointer` as the run
saves it. "Blocks the loop" is the time `save` takes to return; "on disk" until `wait` returns.

    python -m experiments.benchmarks.bench_checkpoint [--config=byol] [--repeats=3] \
        [--directory=/tmp/x]

Prints a Markdown table and writes it to experiments/results/checkpoint.md.
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np

import experiments
from experiments import machine


def host_state(config_name):
  """A train state of configs/<config_name>.py, as random host arrays (what the run saves)."""
  import jax  # pylint: disable=g-import-not-at-top
  from experiments.benchmarks import tpu_compile  # pylint: disable=g-import-not-at-top
  from byol_jax import run  # pylint: disable=g-import-not-at-top
  from byol_jax import train  # pylint: disable=g-import-not-at-top
  config = tpu_compile.load_config(config_name, {})
  shapes = train.state_shapes(config, image_shape=(config.image_size,) * 2 + (3,), num_classes=1000,
                              steps_per_epoch=312)
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype),
                      run.checkpoint_tree(shapes))


def time_saves(state, directory, async_save, repeats):
  from byol_jax import checkpoint  # pylint: disable=g-import-not-at-top
  checkpointer = checkpoint.Checkpointer(directory, keep=2, async_save=async_save)
  blocked, on_disk = [], []
  for step in range(1, repeats + 1):
    start = time.perf_counter()
    checkpointer.save(step, state, {"step": step})
    blocked.append(time.perf_counter() - start)
    checkpointer.wait()
    on_disk.append(time.perf_counter() - start)
  checkpointer.close()
  return statistics.median(blocked), statistics.median(on_disk)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="byol")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--directory", default=None, help="where to save (default: a temp dir)")
  args = parser.parse_args()
  import jax  # pylint: disable=g-import-not-at-top
  state = host_state(args.config)
  size_gib = sum(x.nbytes for x in jax.tree.leaves(state)) / 2**30
  rows = []
  for async_save in (False, True):
    with tempfile.TemporaryDirectory(dir=args.directory) as directory:
      blocked, on_disk = time_saves(state, directory, async_save, args.repeats)
    rows.append(f"| {'async' if async_save else 'synchronous'} | {blocked:.2f} | {on_disk:.2f} |")
  text = "\n".join([
      f"# Checkpoint saves: how long the training loop waits ({machine.cpu_name()}, "
      f"{os.cpu_count()} cores)", "",
      f"`python -m experiments.benchmarks.bench_checkpoint --config={args.config} "
      f"--repeats={args.repeats}`:"
      f" the train state of configs/{args.config}.py ({size_gib:.2f} GiB on the host), saved "
      f"to a local disk; medians of {args.repeats} saves.", "",
      "| save | blocks the loop (s) | on disk (s) |", "| --- | --- | --- |", *rows
  ]) + "\n"
  print(text)
  (experiments.RESULTS / "checkpoint.md").write_text(text)


if __name__ == "__main__":
  main()
