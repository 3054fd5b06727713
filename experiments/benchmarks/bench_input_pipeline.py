"""Benchmarks the input path: host pipeline throughput and on-device augmentation time.

The host part writes ImageNet-sized JPEGs to a temporary image folder and reads them through
`pipeline.pretrain_batches` (fused JPEG decode and random crop, bicubic resize, flip; two views per
image), once pinned to one CPU core and once on all of the process's cores, so the numbers give
the cores per host that a given train step rate needs. The device part times the jitted
`augment_view` on both views of a batch, on JAX's default backend; it needs no TensorFlow.

  python -m experiments.benchmarks.bench_input_pipeline  # both parts, writes the table
  python -m experiments.benchmarks.bench_input_pipeline --parts=augment  # e.g. without TF

Prints a Markdown table and writes it to experiments/results/input_pipeline.md (--output).
"""
import argparse
import multiprocessing
import os
import statistics
import tempfile
import time

import numpy as np

import experiments
from experiments import machine

_DEFAULT_OUTPUT = str(experiments.RESULTS / "input_pipeline.md")


def _write_jpegs(folder, num_images, width, height):
  """Smooth random colour fields plus texture: JPEG sizes close to ImageNet's (~100 kB)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  os.makedirs(folder)
  sizes = []
  for i in range(num_images):
    coarse = rng.uniform(0, 255, (height // 25 + 2, width // 25 + 2, 3)).astype(np.float32)
    smooth = tf.image.resize(coarse, [height, width], method="bicubic").numpy()
    image = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
    data = tf.io.encode_jpeg(image, quality=90).numpy()
    sizes.append(len(data))
    with open(os.path.join(folder, f"{i:05d}.jpg"), "wb") as f:
      f.write(data)
  return float(np.mean(sizes))


def _host_throughput(folder, image_size, batch_size, seconds, cores):
  """Images (pairs of views) per second of pretrain_batches on `cores` cores (None: all)."""
  if cores:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])
  from byol_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  batches = pipeline.pretrain_batches(dataset=f"folder:{folder}", data_dir=None, split="all",
                                      global_batch_size=batch_size, image_size=image_size, seed=0)
  for _ in range(3):  # Warm-up: tf.data autotuning, file cache.
    next(batches)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next(batches)
    count += batch_size
  return count / (time.perf_counter() - start)


def _augment_time(image_size, batch_size, repeats):
  """(compile seconds, median ms, device) of jitted augment_view on both views of a batch."""
  import jax  # pylint: disable=g-import-not-at-top
  from byol_jax.data import augment  # pylint: disable=g-import-not-at-top

  @jax.jit
  def both_views(view1, view2, index, step):
    return (augment.augment_view(view1, augment.example_keys(0, step, index, 0), augment.VIEW1),
            augment.augment_view(view2, augment.example_keys(0, step, index, 1), augment.VIEW2))

  rng = np.random.default_rng(0)
  shape = (batch_size, image_size, image_size, 3)
  args = (jax.device_put(rng.integers(0, 256, shape, dtype=np.uint8)),
          jax.device_put(rng.integers(0, 256, shape, dtype=np.uint8)),
          jax.device_put(np.arange(batch_size, dtype=np.int32)))
  start = time.perf_counter()
  compiled = both_views.lower(*args, 0).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(*args, 0))
  times = []
  for step in range(1, repeats + 1):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args, step))
    times.append(time.perf_counter() - start)
  return compile_s, 1e3 * statistics.median(times), jax.devices()[0].device_kind


def _in_subprocess(fn, *args):
  """Runs fn in a fresh process, so core pinning and thread pools do not leak between runs."""
  with multiprocessing.get_context("spawn").Pool(1) as pool:
    return pool.apply(fn, args)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--parts", default="host,augment")
  parser.add_argument("--num_images", type=int, default=256)
  parser.add_argument("--width", type=int, default=500)
  parser.add_argument("--height", type=int, default=375)
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--seconds", type=float, default=20.0, help="per host measurement")
  parser.add_argument("--repeats", type=int, default=5, help="timed augmentation calls")
  parser.add_argument("--output", default=_DEFAULT_OUTPUT)
  args = parser.parse_args()
  parts = set(args.parts.split(","))
  cores = len(os.sched_getaffinity(0))
  rows = []

  if "host" in parts:
    with tempfile.TemporaryDirectory() as tmp:
      folder = os.path.join(tmp, "images")
      mean_bytes = _in_subprocess(_write_jpegs, folder, args.num_images, args.width, args.height)
      setting = (f"{args.num_images} JPEGs {args.width}x{args.height} (mean "
                 f"{mean_bytes / 1e3:.0f} kB) in a folder, 2 views at {args.image_size} px, "
                 f"batch {args.batch_size}")
      one = _in_subprocess(_host_throughput, folder, args.image_size, args.batch_size, args.seconds,
                           1)
      rows.append(("host pipeline, 1 core", f"{one:.0f} images/s", setting))
      if cores > 1:
        every = _in_subprocess(_host_throughput, folder, args.image_size, args.batch_size,
                               args.seconds, None)
        rows.append((f"host pipeline, all {cores} cores",
                     f"{every:.0f} images/s ({every / cores:.0f} per core)", setting))

  if "augment" in parts:
    compile_s, ms, device = _in_subprocess(_augment_time, args.image_size, args.batch_size,
                                           args.repeats)
    setting = (f"jit(augment_view) on view 1 and view 2 of uint8 {args.batch_size}x"
               f"{args.image_size}x{args.image_size}x3, median of {args.repeats}; compile "
               f"{compile_s:.1f} s")
    rows.append((f"on-device augmentation ({device})",
                 f"{ms:.1f} ms per batch ({1e3 * args.batch_size / ms:.0f} images/s)", setting))

  table = "\n".join([
      f"Input pipeline benchmark: `python -m experiments.benchmarks.bench_input_pipeline` on "
      f"{machine.cpu_name()}, {cores} cores available to the process.", "",
      "| measurement | result | setting |", "| --- | --- | --- |"
  ] + [f"| {name} | {value} | {setting} |" for name, value, setting in rows]) + "\n"
  print(table)
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  with open(args.output, "w") as f:
    f.write(table)


if __name__ == "__main__":
  main()
