r"""Which part of the image a run's step-0 encoder sees, per config.

    python -m experiments.reproduction.step0_view configs/byol.py:tiny \
        configs/byol_bn_stats.py:tiny ...

With each block's last norm at 0 a residual block is the identity at step 0, and the encoder is
the stem and the 1x1 stride-2 shortcuts: at 32 px with the imagenet stem those subsample the 8x8
map down to its top-left position. For each config this redraws every pixel outside the top-left
k x k square of 64 random images and reports the largest change of the step-0 embedding (the run's
own: random init, and for init=bn_stats its scales and offsets from batch statistics). 0 means the
encoder ignores everything outside that square. Writes experiments/results/step0_view.md.
"""
import sys

import numpy as np

from byol_jax import config as config_lib
from byol_jax import model
from byol_jax import run
import experiments
from experiments import machine

SQUARES = (9, 16, 24)


def embedding_changes(spec, rng):
  """{k: max |change| of the step-0 embedding when pixels outside the top-left k x k change}."""
  config = config_lib.validate(config_lib.from_file(spec))
  state = run.untrained_state(run.plan(config))
  embed = model.make_embed_fn(config, state.online_params, state.online_state)
  size = config.image_size
  images = rng.integers(0, 256, (64, size, size, 3), dtype=np.uint8)
  base = np.asarray(embed(images))
  changes = {}
  for k in SQUARES:
    outside = np.ones((size, size), bool)
    outside[:k, :k] = False
    redrawn = images.copy()
    redrawn[:, outside] = rng.integers(0, 256, (64, int(outside.sum()), 3), dtype=np.uint8)
    changes[k] = float(np.abs(np.asarray(embed(redrawn)) - base).max())
  return changes, float(np.abs(base).max())


def main(specs):
  rng = np.random.default_rng(0)
  header = ("| config | " + " | ".join(f"change, outside top-left {k}x{k}" for k in SQUARES) +
            " | max abs(embedding) |")
  rows = [header, "|" + " --- |" * (len(SQUARES) + 2)]
  for spec in specs:
    changes, scale = embedding_changes(spec, rng)
    rows.append(f"| `{spec}` | " + " | ".join(f"{changes[k]:.3g}" for k in SQUARES) +
                f" | {scale:.3g} |")
  table = "\n".join(rows)
  print(table)
  out = experiments.RESULTS / "step0_view.md"
  out.write_text(
      "# What the step-0 encoder sees\n\n`python -m experiments.reproduction.step0_view " +
      " ".join(specs) + f"` on {machine.cpu_name()}.\n\n" + table + "\n")
  print(f"Wrote {out}")


if __name__ == "__main__":
  if len(sys.argv) < 2:
    sys.exit("usage: python -m experiments.reproduction.step0_view CONFIG[:PRESET] ...")
  main(sys.argv[1:])
