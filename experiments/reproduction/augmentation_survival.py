r"""What of an image survives BYOL's augmentations, step by step, on a validation split.

    python -m experiments.reproduction.augmentation_survival [--datasets=shapes10,textures10]

Two views of the same images go through the pipeline with the augmentations added one at a time:
crops and flips only, then colour jitter, grayscale, and blur and solarize (the paper's views, hue
0.1). After each, how often a view retrieves its partner among all the other views (chance
1 / images) by its pixels, by its colour statistics (each channel's mean and standard deviation),
and by the step-0 embedding of the tiny BN encoder. Writes
experiments/results/augmentation_survival.md and .json.
"""
import argparse
import json

import jax
import numpy as np

from byol_jax import config as config_lib
from byol_jax import model
from byol_jax import train
from byol_jax.data import pipeline
import experiments
from experiments import machine
from experiments.reproduction import protocol_screen

RESULTS = experiments.RESULTS
_OFF = dict(color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0)
# Each stage turns on the paper's value of its keys, on top of the stages before it.
STAGES = (
    ("crops and flips", {}),
    ("+ colour jitter", dict(color_jitter_prob=None)),
    ("+ grayscale", dict(grayscale_prob=None)),
    ("+ blur, solarize (the paper's views)", dict(blur_prob=None, solarize_prob=None)),
)


def _colour_statistics(views):
  return np.concatenate([views.mean(axis=(1, 2)), views.std(axis=(1, 2))], axis=1)


def _stage_config(base, stage):
  """The config with the augmentations of stages up to `stage` at the paper's values."""
  config = config_lib.from_file("configs/byol.py:tiny")
  config.update(base)
  for name, view in (("view1", config.view1), ("view2", config.view2)):
    paper = config_lib.from_file("configs/byol.py")[name]
    view.update(_OFF)
    for _, keys in STAGES[:stage + 1]:
      view.update({key: paper[key] for key in keys})
    view.hue = paper.hue
  return config_lib.validate(config)


def survival(dataset, data_dir, split, images, image_size):
  """Rows of partner retrieval (pixels, colour statistics, random BN encoder) per stage."""
  rows = []
  for stage, (name, _) in enumerate(STAGES):
    config = _stage_config(dict(dataset=dataset, data_dir=data_dir, image_size=image_size), stage)
    batch = next(
        pipeline.pretrain_batches(dataset=dataset, data_dir=data_dir, split=split,
                                  global_batch_size=images, image_size=image_size, seed=config.seed,
                                  crop_min_area=config.crop_min_area))
    views = jax.pmap(lambda b, c=config: train.augment_views(c, b, 0), axis_name=model.AXIS)(batch)
    labels = batch["label"][0]
    pixels = [np.asarray(v[0], np.float32) for v in views]
    embeddings = protocol_screen.outputs(config, protocol_screen.untrained(config), views)
    row = dict(stage=name)
    for feature, (one, two) in (("pixels", [p.reshape(images, -1) for p in pixels]),
                                ("colour_stats", [_colour_statistics(p) for p in pixels]),
                                ("bn_encoder", [e["embedding"] for e in embeddings])):
      row[feature], row[f"{feature}_class"] = protocol_screen.retrieval(one, two, labels)
    print(json.dumps({"dataset": dataset, **row}), flush=True)
    rows.append(row)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--datasets", default="shapes10,textures10")
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--split", default="validation")
  parser.add_argument("--images", type=int, default=512)
  parser.add_argument("--image_size", type=int, default=36)
  args = parser.parse_args()
  results = {
      dataset: survival(dataset, args.data_dir, args.split, args.images, args.image_size)
      for dataset in args.datasets.split(",")
  }
  header = dict(cpu=machine.cpu_name(), split=args.split, images=args.images,
                image_size=args.image_size, chance=1 / args.images)
  (RESULTS / "augmentation_survival.json").write_text(
      json.dumps({**header, "datasets": results}, indent=1))
  columns = ["stage", "pixels", "colour_stats", "bn_encoder", "bn_encoder_class"]
  lines = [
      "# What survives the augmentations", "",
      f"`python -m experiments.reproduction.augmentation_survival --datasets={args.datasets}` on "
      f"{header['cpu']}: {args.split!r} split, {args.image_size} px. Partner retrieval among "
      f"{args.images} views (chance {1 / args.images:.4f}) by pixels, by colour statistics and by "
      "the tiny BN encoder's step-0 embedding; bn_encoder_class: how often the retrieved view has "
      "the query's class (chance about 0.1).", ""
  ]
  for dataset, rows in results.items():
    lines += [f"## {dataset}", ""] + protocol_screen.table(rows, columns) + [""]
  (RESULTS / "augmentation_survival.md").write_text("\n".join(lines))


if __name__ == "__main__":
  main()
