r"""What a CPU-scale setting keeps of the paper, measured at step 0, before anything trains.

    python -m experiments.reproduction.protocol_screen \
        [--dataset=textures10 --out=protocol_screen_textures10]

Reads one validation split (shapes10's by default), never a test split. For each candidate
geometry (image size, stem) and depth:
- the encoder's last feature map (the paper's is 7 x 7; 1 x 1 leaves the modified init's step-0
  encoder one input position per stage);
- the init pathology: with no normalization and the official init, how far apart the embeddings of
  different images are (mean cosine of pairs; near 1 means every image maps to one direction) and
  their scale, beside BN's;
- the starting signal: for each Table 2 variant's step-0 network (training mode, as the target
  runs), how often a view's embedding retrieves its partner among all the other view's (chance is
  1 / images), with the paper's hue 0.1 and the old tiny preset's 0.5;
- the cost: seconds per training step at the tiny batch, on this machine.
Writes experiments/results/protocol_screen.md and .json.
"""
import argparse
import json
import time

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from byol_jax import config as config_lib
from byol_jax import model
from byol_jax import run
from byol_jax import train
from byol_jax.data import pipeline
import experiments
from experiments import machine

RESULTS = experiments.RESULTS
# Image sizes with the paper's (imagenet) stem; the cifar stem's 32 x 32 first stage made a step
# 7 times slower than the imagenet stem's at 32 px (1.18 s against 0.163 s, depth 18).
IMAGE_SIZES = (32, 36, 48, 64)
VARIANTS = {
    "bn": ("configs/byol.py:tiny", {}),
    "none": ("configs/byol.py:tiny", dict(norm="none")),
    "bn_stats": ("configs/byol_bn_stats.py:tiny", {}),
    "gn_ws": ("configs/byol_gn_ws.py:tiny", {}),
}
DEPTHS = (18, 34, 50)
HUES = (0.1, 0.5)
# The paper's encoder, for the fraction of the image the modified init's step-0 encoder sees.
PAPER = dict(depth=50, width=1.0, image_size=224, compute_dtype="float32")


def _config(spec, hue=None, **overrides):
  config = config_lib.from_file(spec)
  config.update(overrides)
  for view in (config.view1, config.view2):
    view.hue = view.hue if hue is None else hue
  return config_lib.validate(config)


def last_map(image_size, stem):
  """Side of the encoder's last feature map: SAME convs, stride 4 in the imagenet stem, then 8."""
  side = image_size
  for stride in ((2, 2) if stem == "imagenet" else ()) + (2, 2, 2):
    side = -(-side // stride)
  return side


def _views(config, images, split):
  """Both step-0 views of the first `images` images of `split` ([1, N, S, S, 3] each), labels."""
  batch = next(
      pipeline.pretrain_batches(dataset=config.dataset, data_dir=config.data_dir, split=split,
                                global_batch_size=images, image_size=config.image_size,
                                seed=config.seed, crop_min_area=config.crop_min_area))
  views = jax.pmap(lambda b: train.augment_views(config, b, 0), axis_name=model.AXIS)(batch)
  return views, batch["label"][0]


def outputs(config, state, views):
  """The step-0 online network's outputs of both views, in training mode (batch statistics)."""
  network = model.make_network(config)

  def apply(params, net_state, view):
    return network.apply(params, net_state, None, view, is_training=True)[0]

  mapped = jax.pmap(apply, axis_name=model.AXIS)
  params, net_state = train.replicate((state.online_params, state.online_state))
  return [jax.tree.map(lambda x: np.asarray(x[0]), mapped(params, net_state, v)) for v in views]


def untrained(config):
  """The state a run of `config` starts from (the modified init included)."""
  return run.untrained_state(run.plan(config))


def _standardized(x):
  """Features centred and scaled per dimension over the batch: an affine map that a predictor can
  learn, so the common direction of a random network's features does not decide the retrieval."""
  x = (x - x.mean(0)) / (x.std(0) + 1e-8)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def retrieval(a, b, labels):
  """(partner, class): how often the row of `b` most similar to a row of `a` (standardized
  cosine) is its partner, and how often it has its class."""
  nearest = np.argmax(_standardized(a) @ _standardized(b).T, axis=1)
  return (float(np.mean(nearest == np.arange(len(a)))), float(np.mean(labels[nearest] == labels)))


def pair_cosine(x):
  """Mean cosine of the embeddings of different images."""
  unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  cos = unit @ unit.T
  return float((cos.sum() - np.trace(cos)) / (len(x) * (len(x) - 1)))


def seen_fraction(config, images=4):
  """Fraction of input pixels that move the step-0 embedding of the modified init (gamma0 = 0 in
  each block's last norm, so every residual branch starts dead): which pixels have a non-zero
  gradient, on random inputs. The mask depends on the structure only, not on the statistics."""
  encoder = hk.transform_with_state(model.encoder_fn(config))
  size = config.image_size
  x = jax.random.normal(jax.random.PRNGKey(0), (images, size, size, 3))
  params, state = encoder.init(jax.random.PRNGKey(1), x, is_training=False)
  direction = jax.random.normal(jax.random.PRNGKey(2), (images, model.embedding_size(config)))

  def projected(inputs):
    return jnp.sum(encoder.apply(params, state, None, inputs, is_training=False)[0] * direction)

  gradient = jax.grad(projected)(x)
  return float(jnp.mean(jnp.any(gradient != 0, axis=(0, 3))))


def _step_seconds(config, split, steps=5):
  """Median seconds of a training step at the config's batch, after the compiling one."""
  state = untrained(config)
  update = train.map_over_devices(train.make_update(config, num_classes=10, steps_per_epoch=78),
                                  devices=jax.devices()[:1])
  state = train.replicate(state, jax.devices()[:1])
  batch = next(
      pipeline.pretrain_batches(dataset=config.dataset, data_dir=config.data_dir, split=split,
                                global_batch_size=config.batch_size, image_size=config.image_size,
                                seed=config.seed))
  state, metrics = update(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = update(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _modified_init(spec="configs/byol_bn_stats.py:tiny", **overrides):
  return _config(spec, zero_init_last_norm=True, **overrides)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--images", type=int, default=512)
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--dataset", default="shapes10")
  parser.add_argument("--split", default="validation")
  parser.add_argument("--out", default="protocol_screen", help="results/OUT.md and .json")
  args = parser.parse_args()
  data = dict(data_dir=args.data_dir, dataset=args.dataset)
  paper = dict(image_size=224, last_map=last_map(224, "imagenet"),
               seen_fraction=seen_fraction(_modified_init("configs/byol_bn_stats.py", **PAPER)))
  print(json.dumps(paper), flush=True)
  sizes = []
  for size in IMAGE_SIZES:
    row = dict(image_size=size, last_map=last_map(size, "imagenet"),
               seen_fraction=seen_fraction(_modified_init(image_size=size)))
    for hue in HUES:
      for variant, (spec, overrides) in VARIANTS.items():
        config = _config(spec, hue=hue, image_size=size, **overrides, **data)
        views, labels = _views(config, args.images, args.split)
        if variant == "bn":  # The views are the same for every variant.
          pixels = [np.asarray(v[0], np.float32).reshape(args.images, -1) for v in views]
          row[f"pixels_hue{hue}"], row[f"pixels_hue{hue}_class"] = retrieval(*pixels, labels)
        one, two = outputs(config, untrained(config), views)
        row[f"{variant}_hue{hue}"], row[f"{variant}_hue{hue}_class"] = retrieval(
            one["embedding"], two["embedding"], labels)
    row["step_seconds"] = _step_seconds(
        _config("configs/byol_gn_ws.py:tiny", image_size=size, **data), args.split)
    print(json.dumps(row), flush=True)
    sizes.append(row)
  depths = []
  for depth in DEPTHS:
    row = dict(depth=depth)
    for norm in ("none", "bn"):
      config = _config("configs/byol.py:tiny", depth=depth, norm=norm, **data)
      embedding = outputs(config, untrained(config),
                          _views(config, args.images, args.split)[0])[0]["embedding"]
      row[f"{norm}_pair_cosine"] = pair_cosine(embedding)
      row[f"{norm}_rms"] = float(np.sqrt(np.mean(np.square(embedding))))
    row["step_seconds"] = _step_seconds(_config("configs/byol_gn_ws.py:tiny", depth=depth, **data),
                                        args.split)
    print(json.dumps(row), flush=True)
    depths.append(row)
  _write(paper, sizes, depths, args)


def table(rows, columns):
  lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
  for row in rows:
    lines.append("| " + " | ".join(
        f"{row[c]:.3g}" if isinstance(row[c], float) else str(row[c]) for c in columns) + " |")
  return lines


def _write(paper, sizes, depths, args):
  images = args.images
  header = {
      "cpu": machine.cpu_name(), "dataset": args.dataset, "split": args.split, "images": images,
      "chance": 1 / images
  }
  (RESULTS / f"{args.out}.json").write_text(
      json.dumps({**header, "paper": paper, "image_sizes": sizes, "depths": depths}, indent=1))
  retrievals = [f"{v}_hue{h}" for h in HUES for v in ("pixels",) + tuple(VARIANTS)]
  lines = [
      "# Step-0 screen of CPU-scale settings", "",
      f"`python -m experiments.reproduction.protocol_screen --dataset={args.dataset} "
      f"--split={args.split}` on "
      f"{header['cpu']}.", "",
      "## Geometry and starting signal (ResNet-18, width 1/4, imagenet stem)", "",
      "last_map: side of the encoder's last feature map. seen_fraction: pixels that move the "
      "modified init's step-0 embedding (the paper's ResNet-50 at 224 px: "
      f"{paper['seen_fraction']:.3g}, last map {paper['last_map']}). <variant>_hue<h>: how often "
      f"a view's step-0 embedding retrieves its partner among {images} (chance {1 / images:.4f}), "
      "with hue jitter h. step_seconds: one GN + WS training step at batch 128 on this CPU.", ""
  ] + table(sizes, ["image_size", "last_map", "seen_fraction", "step_seconds"] + retrievals)
  lines += ["", "Class of the retrieved view (chance about 0.1):", ""]
  lines += table(sizes, ["image_size"] + [f"{r}_class" for r in retrievals])
  lines += [
      "", "## Init pathology (32 px): embeddings of different images at step 0", "",
      "pair_cosine: mean cosine between different images' embeddings (1: all alike); rms: their "
      "scale.", ""
  ] + table(depths,
            ["depth", "none_pair_cosine", "bn_pair_cosine", "none_rms", "bn_rms", "step_seconds"])
  (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
