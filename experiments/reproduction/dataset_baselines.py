r"""What a dataset offers before any self-supervision, read on its validation split.

    python -m experiments.reproduction.dataset_baselines --dataset=textures10 [--seeds=3]

Linear and kNN top-1 with the tiny presets' protocol (train split -> validation split) of raw
pixels (the centre crop, flattened) and of each Table 2 variant's step-0 encoder (bn, none,
bn_stats, gn_ws; a new draw of the weights per seed). A BYOL encoder that learns must beat every
row. The supervised bound is experiments/reproduction/supervised_bound.py. Writes
experiments/results/baselines_<dataset>.md and .json.
"""
import argparse
import json

import jax.numpy as jnp

from byol_jax import config as config_lib
from byol_jax import model
from byol_jax.evaluation import protocol
import experiments
from experiments import machine
from experiments.reproduction import intervals
from experiments.reproduction import protocol_screen

RESULTS = experiments.RESULTS
VARIANTS = {
    "bn": ("configs/byol.py:tiny", {}),
    "none": ("configs/byol.py:tiny", dict(norm="none")),
    "bn_stats": ("configs/byol_bn_stats.py:tiny", {}),
    "gn_ws": ("configs/byol_gn_ws.py:tiny", {}),
}


def _pixels(images):
  return jnp.asarray(images, jnp.float32).reshape(len(images), -1) / 255.0


def _step0_embed_fn(config):
  state = protocol_screen.untrained(config)
  return model.make_embed_fn(config, state.online_params, state.online_state)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dataset", default="shapes10")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--split", default="validation", help="the split the numbers are read on")
  parser.add_argument("--image_size", type=int, default=None, help="default: the tiny preset's")
  parser.add_argument("--seeds", type=int, default=3)
  args = parser.parse_args()
  rows = {name: [] for name in ("pixels",) + tuple(VARIANTS)}
  for seed in range(args.seeds):
    for name, (spec, overrides) in VARIANTS.items():
      config = config_lib.from_file(spec)
      config.update(dataset=args.dataset, data_dir=args.data_dir, seed=seed, **overrides)
      config.image_size = args.image_size or config.image_size
      config.eval.test_split = args.split
      config = config_lib.validate(config)
      evaluate = lambda embed_fn, c=config: protocol.evaluate_features(
          embed_fn, dataset=c.dataset, data_dir=c.data_dir, image_size=c.image_size, eval_config=c.
          eval, seed=c.seed)
      if name == "bn":  # The pixels' protocol is every variant's.
        rows["pixels"].append(evaluate(_pixels))
      rows[name].append(evaluate(_step0_embed_fn(config)))
      print(json.dumps({"seed": seed, "encoder": name, **rows[name][-1]}), flush=True)
  _write(rows, args, config.image_size)


def _write(rows, args, image_size):
  out = f"baselines_{args.dataset}"
  header = dict(cpu=machine.cpu_name(), dataset=args.dataset, split=args.split,
                image_size=image_size, seeds=args.seeds)
  (RESULTS / f"{out}.json").write_text(json.dumps({**header, "rows": rows}, indent=1))
  lines = [
      f"# Baselines on {args.dataset}", "",
      f"`python -m experiments.reproduction.dataset_baselines --dataset={args.dataset} "
      f"--image_size={image_size} --seeds={args.seeds}` on {header['cpu']}: trained on the "
      f"train split, read on {args.split!r}, {image_size} px, the tiny presets' protocol; mean ± "
      "t-based 95% interval over seeds (%).", "", "| features | linear top-1 | kNN top-1 |",
      "| --- | --- | --- |"
  ]
  for name, results in rows.items():
    label = name if name == "pixels" else f"step-0 encoder, {name}"
    lines.append(f"| {label} | {intervals.format_interval([r['top1'] for r in results])} | "
                 f"{intervals.format_interval([r['knn_top1'] for r in results])} |")
  (RESULTS / f"{out}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
