r"""Does a trained encoder code its images' colours? A ridge probe of hue, beside the class's.

    python -m experiments.reproduction.colour_probe WORKDIR [WORKDIR ...] [--split=validation]

For each finished run: the centre crops of --split, embedded by the exported encoder and by the
step-0 encoder of the same config; a ridge regression from the standardized features, fitted on
the first half of the split and scored (R^2) on the second, of (a) the hue of the image's darker
and of its brighter pixels (as cos and sin: hue is an angle) and (b) the one-hot class. Features
that learned the images' colours and not their class raise (a) over the random init and not (b).
Writes experiments/results/colour_probe.md and .json.
"""
import argparse
import json
import pathlib

import ml_collections
import numpy as np

from byol_jax import config as config_lib
from byol_jax import export
from byol_jax import model
from byol_jax.data import augment
from byol_jax.data import pipeline
import experiments
from experiments import machine
from experiments.reproduction import protocol_screen

RESULTS = experiments.RESULTS
_RIDGE = 1.0  # Per standardized feature; the probe compares encoders, it is not tuned.
_SHARE = 0.3  # The darkest and brightest 30% of pixels give the two colours' hues.


def hue_targets(images):
  """[N, 4]: cos and sin of the circular mean hue of each image's darkest and brightest pixels."""
  hsv = np.asarray(augment.rgb_to_hsv(images.reshape(len(images), -1, 3).astype(np.float32) / 255))
  order = np.argsort(hsv[..., 2], axis=1)
  count = int(_SHARE * order.shape[1])
  targets = []
  for pixels in (order[:, :count], order[:, -count:]):
    angles = 2 * np.pi * np.take_along_axis(hsv[..., 0], pixels, axis=1)
    mean = np.arctan2(np.sin(angles).mean(1), np.cos(angles).mean(1))
    targets += [np.cos(mean), np.sin(mean)]
  return np.stack(targets, axis=1)


def ridge_r2(features, targets):
  """R^2 on the second half of a ridge regression fitted on the first half."""
  half = len(features) // 2
  mean, std = features[:half].mean(0), features[:half].std(0) + 1e-8
  x = (features - mean) / std
  fit_x, fit_y = x[:half], targets[:half]
  weights = np.linalg.solve(fit_x.T @ fit_x + _RIDGE * half * np.eye(x.shape[1]),
                            fit_x.T @ (fit_y - fit_y.mean(0)))
  residual = targets[half:] - fit_y.mean(0) - x[half:] @ weights
  total = targets[half:] - targets[half:].mean(0)
  return float(1 - np.sum(residual**2) / np.sum(total**2))


def probe(workdir, split):
  config = ml_collections.ConfigDict(json.loads(
      (pathlib.Path(workdir) / "config.json").read_text()))
  config = config_lib.validate(config)
  step0 = protocol_screen.untrained(config)
  encoders = {
      "trained": export.load_encoder(str(pathlib.Path(workdir) / "encoder")),
      "step 0": model.make_embed_fn(config, step0.online_params, step0.online_state),
  }
  batches = list(
      pipeline.eval_batches(dataset=config.dataset, data_dir=config.data_dir, split=split,
                            batch_size=config.eval.batch_size, image_size=config.image_size,
                            crop_fraction=config.eval.crop_fraction))
  images = np.concatenate([b["image"][b["mask"]] for b in batches])
  labels = np.concatenate([b["label"][b["mask"]] for b in batches])
  hues, classes = hue_targets(images), np.eye(labels.max() + 1)[labels]
  row = dict(workdir=str(workdir), dataset=config.dataset, norm=config.norm)
  for name, embed in encoders.items():
    features = np.concatenate(
        [np.asarray(embed(images[s:s + 500]), np.float64) for s in range(0, len(images), 500)])
    row[f"{name} hue R2"], row[f"{name} class R2"] = (ridge_r2(features,
                                                               hues), ridge_r2(features, classes))
  print(json.dumps(row), flush=True)
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("workdirs", nargs="+")
  parser.add_argument("--split", default="validation")
  args = parser.parse_args()
  rows = [probe(workdir, args.split) for workdir in args.workdirs]
  header = dict(cpu=machine.cpu_name(), split=args.split, ridge=_RIDGE)
  (RESULTS / "colour_probe.json").write_text(json.dumps({**header, "rows": rows}, indent=1))
  columns = [
      "dataset", "norm", "step 0 hue R2", "trained hue R2", "step 0 class R2", "trained class R2"
  ]
  lines = [
      "# Colour or class: what the trained encoders code", "",
      f"`python -m experiments.reproduction.colour_probe WORKDIR ...` on {header['cpu']}, "
      f"{args.split!r} split: "
      "held-out R^2 of a ridge probe (fitted on the first half) of the images' two hues and of "
      "their one-hot class, from the step-0 and the trained encoder of each run.", ""
  ] + protocol_screen.table(rows, columns)
  (RESULTS / "colour_probe.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
