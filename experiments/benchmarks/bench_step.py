r"""Train-step time of a config on 1..N (fake CPU) devices, on synthetic on-device-sized inputs.

    python -m experiments.benchmarks.bench_step --config=configs/byol_gn_ws.py:tiny --devices=1,4

Each device count runs in its own process (XLA's fake CPU device count is fixed at start-up). The
global batch is the config's, split over the devices; inputs are random uint8 views, so the time is
the step's (on-device augmentation included), not the input pipeline's. Prints a Markdown table and
writes it to experiments/results/step_time_<config>.md.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import experiments

ROOT = experiments.REPO


def measure(spec, steps):
  """Runs in the child process: compile time and mean step time over `steps` steps."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from byol_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from byol_jax import train  # pylint: disable=g-import-not-at-top

  config = config_lib.from_file(spec)
  devices = jax.local_devices()
  size, batch = config.image_size, config.batch_size
  state = train.replicate(
      train.init_state(config, jax.random.PRNGKey(0), image_shape=(size, size, 3), num_classes=10,
                       steps_per_epoch=100), devices)
  update = train.map_over_devices(train.make_update(config, num_classes=10, steps_per_epoch=100))
  rng = np.random.default_rng(0)
  shape = (len(devices), batch // len(devices))
  inputs = {
      "view1": rng.integers(0, 256, shape + (size, size, 3), dtype=np.uint8),
      "view2": rng.integers(0, 256, shape + (size, size, 3), dtype=np.uint8),
      "label": np.zeros(shape, np.int32), "index": np.arange(batch, dtype=np.int32).reshape(shape)
  }
  start = time.perf_counter()
  state, metrics = update(state, inputs)
  jax.block_until_ready(metrics)
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = update(state, inputs)
  jax.block_until_ready(metrics)
  step = (time.perf_counter() - start) / steps
  return {
      "devices": len(devices), "first_step_s": first, "step_s": step,
      "images_per_sec": batch / step, "batch": batch, "image_size": size
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/byol_gn_ws.py:tiny")
  parser.add_argument("--devices", default="1,4", help="comma-separated fake CPU device counts")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(measure(args.config, args.steps)))
    return
  rows = []
  for count in (int(n) for n in args.devices.split(",")):
    env = {
        **os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}",
        "JAX_PLATFORMS": "cpu"
    }
    out = subprocess.run([
        sys.executable, "-m", "experiments.benchmarks.bench_step", "--child",
        f"--config={args.config}", f"--steps={args.steps}"
    ], env=env, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    rows.append(json.loads(out.strip().splitlines()[-1]))
  table = [
      f"Train step of `{args.config}` (batch {rows[0]['batch']}, {rows[0]['image_size']} px, "
      f"synthetic inputs, mean of {args.steps} steps after the first), "
      f"{os.cpu_count()} CPU cores.", "",
      "| fake CPU devices | first step incl. compile (s) | step (s) | images/s |",
      "| --- | --- | --- | --- |"
  ]
  table += [
      f"| {r['devices']} | {r['first_step_s']:.1f} | {r['step_s']:.3f} | "
      f"{r['images_per_sec']:.0f} |" for r in rows
  ]
  table += [
      "", f"Command: `python -m experiments.benchmarks.bench_step --config={args.config} "
      f"--devices={args.devices} --steps={args.steps}`"
  ]
  text = "\n".join(table) + "\n"
  print(text)
  name = pathlib.Path(args.config.partition(":")[0]).stem + ("_" + args.config.partition(":")[2]
                                                             if ":" in args.config else "")
  out_path = experiments.RESULTS / f"step_time_{name}.md"
  out_path.write_text(text)
  print(f"Written to {out_path}")


if __name__ == "__main__":
  main()
