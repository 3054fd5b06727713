r"""Compiles the real train step for a TPU topology on a CPU host, and reports what it costs there.

No TPU is needed: libtpu (`pip install -e ".[tpu]"`) compiles for abstract devices that
`jax.experimental.topologies` describes. The step is the one `byol_jax.main` runs
(`train.map_over_devices(train.make_update(...))`, donated state, on-device augmentation), lowered
on shape-only inputs. For each row it reports the compile time, XLA's FLOPs per image, the
per-device memory against the chip's HBM (arguments, outputs, temporaries, and what donation
aliases), and the images/s per chip that 100% and 40% of the chip's bf16 peak would give.

    python -m experiments.benchmarks.tpu_compile --rows=bn_v3_512                  # one row of ROWS
    python -m experiments.benchmarks.tpu_compile --rows=all  # every row (hours here)
    python -m experiments.benchmarks.tpu_compile --rows=bn_v4_32 --search_batch  # + largest batch

Prints a Markdown table and writes it, with its JSON, to experiments/results/tpu_compile.{md,json}
(--output); rows already there and not rerun are kept. Only one process may hold libtpu at a time.
"""
import argparse
import collections
import functools
import json
import math
import os
import pathlib
import re
import sys
import time

import numpy as np

import experiments
from experiments import machine

REPO, RESULTS = experiments.REPO, experiments.RESULTS
GIB = 2**30

# One JAX device of each generation: HBM and peak bf16 FLOP/s (Cloud TPU's published figures), and
# devices per chip (v3: one per core, two cores a chip; v4 megacore and v5e: one per chip).
Chip = collections.namedtuple("Chip", "hbm_gib peak_tflops devices_per_chip")
CHIPS = {"v3": Chip(16, 61.5, 2), "v4": Chip(32, 275.0, 1), "v5e": Chip(16, 197.0, 1)}

_SINGLE_HOST = dict(chips_per_host_bounds=(2, 2, 1), num_slices=1)
# Slice name -> get_topology_desc arguments (v4 as megacore: one device per chip).
TOPOLOGIES = {
    "v3-8":
        dict(topology_name="v3:2x2"),
    "v3-512":
        dict(topology_name="v3:16x16"),
    "v4-8":
        dict(topology_name="v4:2x2x1", chip_config_name="megacore", wrap=(False,) * 3,
             **_SINGLE_HOST),
    "v4-32":
        dict(topology_name="v4:2x2x4", chip_config_name="megacore", wrap=(False, False, True),
             **_SINGLE_HOST),
    "v4-64":
        dict(topology_name="v4:2x4x4", chip_config_name="megacore", wrap=(False, True, True),
             **_SINGLE_HOST),
    "v5e-4":
        dict(topology_name="v5e:2x2", wrap=(False,) * 3, **_SINGLE_HOST),
    "v5e-16":
        dict(topology_name="v5e:4x4", wrap=(False,) * 3, **_SINGLE_HOST),
}

Row = collections.namedtuple("Row", "config topology per_device_batch overrides")
# The paper's configs at the paper's global batch 4096 on v3-512 (8 per core), and at 128 per chip
# on v4 and v5e slices; float32, rematerialized blocks, and ResNet-50 2x and 4x beside them.
ROWS = {
    "bn_v3_512": Row("byol", "v3-512", 8, {}),
    "gn_ws_v3_512": Row("byol_gn_ws", "v3-512", 8, {}),
    "bn_stats_v3_512": Row("byol_bn_stats", "v3-512", 8, {}),
    "simclr_v3_512": Row("simclr", "v3-512", 8, {}),
    "bn_v4_32": Row("byol", "v4-32", 128, {}),
    "bn_v4_64": Row("byol", "v4-64", 128, {}),
    "gn_ws_v4_64": Row("byol_gn_ws", "v4-64", 128, {}),
    "bn_v5e_16": Row("byol", "v5e-16", 128, {}),
    "bn_float32_v4_64": Row("byol", "v4-64", 128, {"compute_dtype": "float32"}),
    "bn_remat_v3_512": Row("byol", "v3-512", 8, {"remat_blocks": True}),
    "bn_remat_v4_64": Row("byol", "v4-64", 128, {"remat_blocks": True}),
    "bn_width2_v4_64": Row("byol", "v4-64", 64, {"width": 2.0}),
    "bn_width4_v4_64": Row("byol", "v4-64", 32, {"width": 4.0}),
    # The paper's batch 4096 on 4 chips: 1024 per chip as 4 accumulated micro-batches of 256,
    # each within the largest batch that gn_ws_v4_64's search found.
    "gn_ws_accum4_v4_8": Row("byol_gn_ws", "v4-8", 1024, {"accumulation_steps": 4}),
    "bn_stats_accum4_v4_8": Row("byol_bn_stats", "v4-8", 1024, {"accumulation_steps": 4}),
}


def load_config(name, overrides):
  """configs/<name>.py's config with `overrides` set, validated."""
  from byol_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.from_file(str(REPO / "configs" / f"{name}.py"))
  config.update(overrides)
  return config_lib.validate(config)


def topology_devices(slice_name):
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  return topologies.get_topology_desc(platform="tpu", **TOPOLOGIES[slice_name]).devices


def _per_device(tree, num_devices):
  """Shape-only stand-ins of `tree` with a leading device axis, as the mapped step takes them."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct((num_devices,) + x.shape, x.dtype), tree)


def compile_step(config, devices, per_device_batch, *, num_classes=1000, steps_per_epoch=312):
  """Lowers and compiles the train step of `config` for `devices`.

  Returns (compiled, bytes of the state, bytes of the batch), per device.

  The state and batch are shape-only: nothing is materialised, so any size compiles on a CPU host.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from byol_jax import train  # pylint: disable=g-import-not-at-top
  size = config.image_size
  state = train.state_shapes(config, image_shape=(size, size, 3), num_classes=num_classes,
                             steps_per_epoch=steps_per_epoch)
  batch = {
      "view1": jax.ShapeDtypeStruct((per_device_batch, size, size, 3), np.uint8),
      "view2": jax.ShapeDtypeStruct((per_device_batch, size, size, 3), np.uint8),
      "label": jax.ShapeDtypeStruct((per_device_batch,), np.int32), "index": jax.ShapeDtypeStruct(
          (per_device_batch,), np.int32)
  }
  update = train.map_over_devices(
      train.make_update(config, num_classes=num_classes, steps_per_epoch=steps_per_epoch),
      devices=devices)
  compiled = update.lower(_per_device(state, len(devices)), _per_device(batch,
                                                                        len(devices))).compile()
  return compiled, _bytes(state), _bytes(batch)


def _bytes(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def measure(config, slice_name, per_device_batch):
  """One row's numbers: compile time, FLOPs per image, memory per device, images/s per chip."""
  devices = topology_devices(slice_name)
  chip = CHIPS[slice_name.split("-")[0]]
  start = time.perf_counter()
  compiled, state_bytes, batch_bytes = compile_step(config, devices, per_device_batch)
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()
  peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes +
          memory.temp_size_in_bytes)
  # XLA's cost analysis counts a loop's body once: with accumulation, one micro-batch's (the
  # update outside the loop, counted per micro-batch image, is a negligible part).
  flops_per_image = machine.xla_flops(compiled) / (per_device_batch // config.accumulation_steps)
  images_per_s_chip = chip.peak_tflops * 1e12 * chip.devices_per_chip / flops_per_image
  aliased_bytes, unaliased_bytes = parameter_bytes(compiled.as_text())
  return {
      "devices": len(devices),
      "per_device_batch": per_device_batch,
      "accumulation_steps": config.accumulation_steps,
      "global_batch": per_device_batch * len(devices),
      "compile_s": round(compile_s, 1),
      "gflop_per_image": flops_per_image / 1e9,
      "argument_gib": memory.argument_size_in_bytes / GIB,
      "output_gib": memory.output_size_in_bytes / GIB,
      "alias_gib": memory.alias_size_in_bytes / GIB,
      "temp_gib": memory.temp_size_in_bytes / GIB,
      "peak_gib": peak / GIB,
      "hbm_gib": chip.hbm_gib,
      "state_gib": state_bytes / GIB,
      # Donation works when the only inputs not aliased to an output are the batch's. State the
      # step never reads (BN's moving averages, recomputed from their hidden sums) is pruned by
      # jax before XLA sees it, so it cannot be aliased: its new value is a fresh buffer.
      "state_donated": unaliased_bytes == batch_bytes,
      "state_unread_mib": (state_bytes - aliased_bytes) / 2**20,
      "images_per_s_per_chip_at_100pct": images_per_s_chip,
      "images_per_s_per_chip_at_40pct": 0.4 * images_per_s_chip,
  }


_DTYPE_BYTES = {
    "pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4,
    "u32": 4, "f64": 8, "s64": 8, "u64": 8
}


def parameter_bytes(hlo_text):
  """(aliased, unaliased) bytes of a compiled program's inputs, unpadded, from its HLO header.

  XLA's memory analysis counts padded (tiled) buffers, which cannot be set against the state's
  size; the header lists each entry parameter's shape and which of them alias an output.
  """
  header = hlo_text[:hlo_text.index("\n")]
  aliased = {int(p) for p in re.findall(r"\{[\d, ]*\}: \((\d+), \{[\d, ]*\}, [a-z-]+\)", header)}
  entry = re.search(r"entry_computation_layout=\{\((.*?)\)->", header).group(1)
  sizes = [
      _DTYPE_BYTES[dtype] * math.prod(int(d)
                                      for d in dims.split(",")
                                      if d)
      for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", entry)
  ]
  return (sum(n for i, n in enumerate(sizes) if i in aliased),
          sum(n for i, n in enumerate(sizes) if i not in aliased))


# A batch whose FLOPs per image pass the row's by more than this fits only by XLA recomputing
# activations (its rematerialization under memory pressure): it trades the chips' time for memory.
RECOMPUTE_TOLERANCE = 0.01
# The search's grain (it reports per-device batches that are multiples of this) and its bound.
BATCH_STEP = 8
MAX_SEARCH_COMPILES = 4


def largest_batch(first, measure_at, step=BATCH_STEP, max_compiles=MAX_SEARCH_COMPILES,
                  keep=lambda batch, capped, trials: None):
  """The largest per-device batch, a multiple of `step`, that fits in HBM without recomputation.

  Peak memory grows about linearly with the batch, so each compile is at the batch where the line
  through the measurements nearest the boundary meets the HBM (a secant search, rounded down to
  `step`). Near the HBM the peak stops growing as XLA starts recomputing activations to fit; there
  the search doubles its last stride until a batch fails, then bisects. It ends when one batch
  fits and the next multiple of `step` above it does not. A batch fails when its peak passes the
  HBM, when XLA refuses it (RESOURCE_EXHAUSTED), or when XLA fits it only by recomputing (FLOPs
  per image above the row's by RECOMPUTE_TOLERANCE). `first` is the row's own measurement, so
  only the guesses compile (each takes minutes); `measure_at(batch)` compiles one. Before each,
  `keep(batch, True, trials)` is given the search so far, so that a search killed mid-compile (its
  host out of memory, say) can keep what it measured, as a capped one.

  Returns (batch, capped, trials): batch is None when the row's own batch does not fit; capped
  when `max_compiles` ran out first, so that batch is a lower bound; trials, each compile's batch,
  peak, FLOPs per image and verdict.
  """
  hbm = first["hbm_gib"]
  if first["peak_gib"] > hbm:
    return None, False, []
  fits = {first["per_device_batch"]: first["peak_gib"]}
  too_large = {}  # Batch -> its peak above HBM, or None where there is none to aim by.
  trials = []
  for _ in range(max_compiles):
    batch = _next_batch(fits, too_large, hbm, step)
    if batch is None:
      return max(fits), False, trials
    keep(max(fits), True, trials)
    try:
      result = measure_at(batch)
    except Exception as e:  # pylint: disable=broad-except; XLA raises its own error class.
      if "RESOURCE_EXHAUSTED" not in str(e):
        raise
      result = None
    trial = _trial(batch, result, first["gflop_per_image"], hbm)
    trials.append(trial)
    print(f"[tpu_compile]   {_describe(trial)}", flush=True)
    if trial["verdict"] == "fits":
      fits[batch] = trial["peak_gib"]
    else:
      too_large[batch] = trial["peak_gib"] if trial["verdict"] == "over HBM" else None
  return max(fits), _next_batch(fits, too_large, hbm, step) is not None, trials


def _trial(batch, result, row_gflop_per_image, hbm_gib):
  if result is None:
    return {"batch": batch, "verdict": "RESOURCE_EXHAUSTED"}
  extra_flops = result["gflop_per_image"] / row_gflop_per_image - 1
  verdict = ("over HBM" if result["peak_gib"] > hbm_gib else
             "recomputes" if extra_flops > RECOMPUTE_TOLERANCE else "fits")
  return {
      "batch": batch, "verdict": verdict, "peak_gib": result["peak_gib"],
      "extra_flops_pct": 100 * extra_flops, "compile_s": result["compile_s"]
  }


def _describe(trial):
  if trial["verdict"] == "RESOURCE_EXHAUSTED":
    return f"per-device batch {trial['batch']}: RESOURCE_EXHAUSTED"
  return (f"per-device batch {trial['batch']}: {trial['verdict']}, peak {trial['peak_gib']:.2f} "
          f"GiB, FLOPs per image {trial['extra_flops_pct']:+.1f}% against the row's, compiled in "
          f"{trial['compile_s']:.0f} s")


def _next_batch(fits, too_large, hbm_gib, step):
  """The next batch largest_batch compiles, or None once the boundary is known to `step`."""
  low = max(fits)
  high = min(too_large, default=None)
  if high is not None and high - low <= step:
    return None
  peaks = fits | {b: p for b, p in too_large.items() if p is not None}
  nearest = min((b for b in peaks if b != low), key=lambda b: abs(b - low), default=None)
  # With one measurement, peak proportional to the batch: too steep, so the first guess is short.
  slope = peaks[low] / low if nearest is None else (peaks[nearest] - peaks[low]) / (nearest - low)
  if slope > 0:
    guess = low + (hbm_gib - peaks[low]) / slope
  else:  # The peak stopped growing: XLA recomputes to fit. Gallop until a batch fails.
    guess = low + 2 * (low - nearest)
  if high is not None:
    guess = min(guess, high - step if too_large[high] is not None else (low + high) / 2)
  # Rounded first: a line that meets the HBM at 160 computes 159.99999.
  return max(int(round(guess, 6)) // step * step, (low // step + 1) * step)


def table(records):
  header = ("| row | topology | devices | per-device batch | global batch | compile (s) | "
            "GFLOP / image | peak GiB / device (of HBM) | args / temp / aliased GiB | "
            "state donated | images/s per chip at 100% / 40% of bf16 peak | largest batch | CPU |")
  lines = [header, "|" + " --- |" * (header.count("|") - 1)]
  for r in records:
    lines.append(
        f"| {r['row']} | {r['topology']} | {r['devices']} | {_batch(r)} | "
        f"{r['global_batch']} | {r['compile_s']:.0f} | {r['gflop_per_image']:.1f} | "
        f"{r['peak_gib']:.2f} of {r['hbm_gib']} | {r['argument_gib']:.2f} / {r['temp_gib']:.2f} "
        f"/ {r['alias_gib']:.2f} | {_donation(r)} | "
        f"{r['images_per_s_per_chip_at_100pct']:.0f} / {r['images_per_s_per_chip_at_40pct']:.0f} "
        f"| {_largest(r)} | {r['cpu']} |")
  return "\n".join(lines)


def _batch(record):
  k = record.get("accumulation_steps", 1)
  return str(record["per_device_batch"]) if k == 1 else (
      f"{record['per_device_batch']} ({k} × {record['per_device_batch'] // k})")


def _largest(record):
  if "largest_per_device_batch" not in record:
    return "–"  # Not searched.
  batch = record["largest_per_device_batch"]
  if batch is None:
    return "none fits"
  if not record["largest_batch_capped"]:
    return str(batch)
  failed = [
      t["batch"] for t in record["batch_search"] if t["verdict"] != "fits" and t["batch"] > batch
  ]
  return f"{batch}–{min(failed) - BATCH_STEP}" if failed else f"≥ {batch}"


def _donation(record):
  verdict = "yes" if record["state_donated"] else "NO"
  if "state_unread_mib" not in record:  # Checked by XLA's padded sizes before parameter_bytes.
    return verdict + " (padded)"
  return f"{verdict} ({record['state_unread_mib']:.2f} MiB unread)"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rows", default="bn_v3_512",
                      help=f"comma-separated rows of {sorted(ROWS)}, or 'all'")
  parser.add_argument(
      "--search_batch", action="store_true",
      help=f"also search the largest per-device batch that fits, a multiple of {BATCH_STEP} (a "
      f"secant search from the row's peak memory: up to {MAX_SEARCH_COMPILES} more compiles)")
  parser.add_argument("--output", default=str(RESULTS / "tpu_compile"),
                      help="path prefix of the .md and .json written")
  args = parser.parse_args()
  names = sorted(ROWS) if args.rows == "all" else args.rows.split(",")
  unknown = sorted(set(names) - set(ROWS))
  if unknown:
    sys.exit(f"Unknown rows {unknown}; choose from {sorted(ROWS)} or 'all'.")
  output = pathlib.Path(args.output)
  for name in names:
    row = ROWS[name]
    config = load_config(row.config, row.overrides)
    print(
        f"[tpu_compile] {name}: compiling configs/{row.config}.py {row.overrides} for "
        f"{row.topology} at {row.per_device_batch} per device...", flush=True)
    record = {
        "row": name, "config": row.config, "overrides": row.overrides, "topology": row.topology,
        "cpu": f"{machine.cpu_name()} ({os.cpu_count()} cores)",
        **measure(config, row.topology, row.per_device_batch)
    }
    if args.search_batch:
      keep = functools.partial(_keep_search, record, output)
      keep(
          *largest_batch(dict(record), functools.partial(measure, config, row.topology), keep=keep))
    print(table([record]).splitlines()[-1], flush=True)
    # Written after every row, so that a long list interrupted keeps the rows it finished.
    text = write([record], output)
  print(text)


def _keep_search(record, output, batch, capped, trials):
  """Puts the batch search so far into `record` and writes it: a search killed keeps its trials."""
  record.update(largest_per_device_batch=batch, largest_batch_capped=capped, batch_search=trials)
  write([record], output)


def write(records, output):
  """Merges `records` into OUTPUT.json (see _merged) and writes both files; returns the text."""
  import jax  # pylint: disable=g-import-not-at-top
  import libtpu  # pylint: disable=g-import-not-at-top
  output = pathlib.Path(output)
  records = _merged(records, output.with_suffix(".json"))
  text = (
      f"# The train step compiled for TPU topologies on a CPU host\n\n"
      f"`python -m experiments.benchmarks.tpu_compile --rows=ROW[,ROW...]` (rows run one or a "
      "few at a "
      f"time; each keeps its own compile time, measured on the CPU host the row names), "
      f"jax {jax.__version__}, libtpu "
      f"{getattr(libtpu, '__version__', '?')}. Memory and FLOPs are XLA's own analysis of "
      "the compiled per-device program; images/s per chip is the chip's bf16 peak divided "
      "by the FLOPs per image (both views, online and target networks, backward pass). "
      "State donated: every input but the batch reuses its buffer for the new state; what "
      "is left, 'unread', is state the step never reads (BN's moving averages, which Haiku "
      "recomputes from their hidden sums), so jax drops it from the program and its new "
      "value gets a fresh buffer. Rows marked '(padded)' predate that check and compared "
      "XLA's padded aliased bytes with the state's size. A per-device batch 'N (k × m)' runs "
      "as k accumulated micro-batches of m (config.accumulation_steps), one at a time; XLA "
      "counts the FLOPs of the loop's body once, so FLOPs per image divide them by m. Largest "
      "batch (`--search_batch`): the "
      f"largest per-device batch, a multiple of {BATCH_STEP}, whose peak fits the HBM without XLA "
      f"recomputing activations to fit (FLOPs per image within {RECOMPUTE_TOLERANCE:.0%} of "
      "the row's; each compile of the search is in the JSON's batch_search). Where the search "
      f"ran out of compiles, 'A–B' says that A fits and B + {BATCH_STEP} does not, '≥ A' that no "
      "batch it tried failed; '–' where it was not run.\n\n" + table(records) + "\n")
  output.with_suffix(".md").write_text(text)
  output.with_suffix(".json").write_text(json.dumps(records, indent=1) + "\n")
  return text


def _merged(records, path):
  """The rows already in `path` (JSON) with those of this run replacing theirs, in ROWS order."""
  previous = json.loads(path.read_text()) if path.exists() else []
  by_row = {r["row"]: r for r in previous} | {r["row"]: r for r in records}
  return [by_row[name] for name in ROWS if name in by_row]


if __name__ == "__main__":
  main()
