"""shapes10: a small labelled image dataset that generates itself, offline.

It lets the quick start, the tests and the CPU-scale reproduction run the real tfds/tf.data input
path (PNG records, decode, crops) without any download. Each image shows one of ten shapes (the
label), upright, with a random size, aspect and position. One random hue per image colours it:
the background in that hue, darker, and the shape in the opposite hue, brighter. The hue is a
nuisance that dominates a random network's features but that BYOL's colour jitter varies between
two views, and the crops vary position and size, so what two views share is the shape. Only
nuisances the augmentations vary are drawn: pose, gradients or clutter that two views share let
BYOL's features end below a random network's (earlier versions; see git history).

Generation is deterministic (fixed seeds) vectorised numpy; the tfds build also PNG-encodes and
writes the records, in seconds.
"""
import numpy as np
import tensorflow_datasets as tfds

from byol_jax.data import augment
from byol_jax.data import generated

NAME = "shapes10"
IMAGE_SIZE = 32
CLASS_NAMES = ("disc", "ring", "triangle", "square", "plus", "star", "crescent", "half_disc",
               "corner", "bar")
# The validation split is for choosing settings (and the kNN monitor), so the test split is read
# only for final numbers.
SPLIT_SIZES = {"train": 10_000, "validation": 2_000, "test": 2_000}
_SPLIT_SEEDS = {"train": 0, "test": 1, "validation": 2}
_SUPERSAMPLE = 2  # Anti-aliasing: shapes are drawn at 2x and box-filtered down.
_CHUNK = 1_000  # Images generated per vectorised step, to bound memory.
_SATURATION = 0.7
_BACKGROUND_VALUE, _SHAPE_VALUE = 0.45, 0.9
_NOISE = 0.03  # Standard deviation of the pixel noise.


def _triangle(u, v):
  inside = np.ones(u.shape, dtype=bool)
  for k in range(3):
    angle = np.pi / 2 + 2 * np.pi * k / 3
    inside &= np.cos(angle) * u + np.sin(angle) * v < 0.5
  return inside


def _star(u, v):
  phase = np.mod(5 * np.arctan2(v, u) / (2 * np.pi), 1.0)
  return np.hypot(u, v) < 1.0 - 1.16 * np.minimum(phase, 1 - phase)


# Inside-tests of every class, in shape coordinates where the shape spans about [-1, 1].
_INSIDE = (
    lambda u, v: np.hypot(u, v) < 0.9,  # disc
    lambda u, v: np.abs(np.hypot(u, v) - 0.75) < 0.2,  # ring
    _triangle,
    lambda u, v: np.maximum(np.abs(u), np.abs(v)) < 0.72,  # square
    lambda u, v: ((np.minimum(np.abs(u), np.abs(v)) < 0.28)  # plus
                  & (np.maximum(np.abs(u), np.abs(v)) < 0.9)),
    _star,
    lambda u, v: (np.hypot(u, v) < 0.9) & (np.hypot(u - 0.45, v) > 0.75),  # crescent
    lambda u, v: (np.hypot(u, v) < 0.95) & (v < 0.0),  # half_disc
    lambda u, v: (np.minimum(u, v) < -0.3) & (np.maximum(np.abs(u), np.abs(v)) < 0.8),  # corner
    lambda u, v: (np.abs(u) < 0.95) & (np.abs(v) < 0.25),  # bar
)


def _hsv_to_rgb(hue, saturation, value):
  """RGB [N, 1, 1, 3] of per-image hues [N, 1, 1, 1] at one saturation and value."""
  hsv = np.concatenate([hue, np.full_like(hue, saturation), np.full_like(hue, value)], axis=-1)
  return np.asarray(augment.hsv_to_rgb(hsv))


def _draw(labels, rng):
  """Draws one chunk of images, float in [0, 1], [N, IMAGE_SIZE, IMAGE_SIZE, 3]."""
  n, size = len(labels), IMAGE_SIZE

  def uniform(low, high):  # One draw per image, broadcastable to [N, H, W, C].
    return rng.uniform(low, high, (n, 1, 1, 1)).astype(np.float32)

  # Shape alpha, upright, drawn at a higher resolution then box-filtered.
  fine = ((np.arange(size * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE).astype(np.float32)
  x, y = fine[None, None, :, None], fine[None, :, None, None]
  cx, cy, radius = uniform(11, 21), uniform(11, 21), uniform(8, 13)  # Shape spans 16-26 px.
  aspect = np.exp(uniform(-0.2, 0.2))
  u, v = np.broadcast_arrays((x - cx) / radius * aspect, (y - cy) / radius / aspect)
  inside = np.empty(u.shape, dtype=bool)
  for label, inside_fn in enumerate(_INSIDE):
    chosen = labels == label
    inside[chosen] = inside_fn(u[chosen], v[chosen])
  alpha = inside.reshape(n, size, _SUPERSAMPLE, size, _SUPERSAMPLE, 1).mean(axis=(2, 4))

  # One random hue per image sets both colours: a darker background and the shape in the opposite
  # hue, brighter. The colour jitter's hue shift (up to half a turn) moves both at once.
  hue = uniform(0, 1)
  background = _hsv_to_rgb(hue, _SATURATION, _BACKGROUND_VALUE)
  foreground = _hsv_to_rgb(np.mod(hue + 0.5, 1.0), _SATURATION, _SHAPE_VALUE)
  image = alpha * foreground + (1 - alpha) * background
  noise = rng.standard_normal(image.shape, dtype=np.float32) * _NOISE
  return np.clip(image + noise, 0, 1)


def generate(num_examples, seed):
  """Returns `num_examples` images (uint8 [N, 32, 32, 3]) and balanced labels (int64 [N])."""
  return generated.generate(_draw, len(CLASS_NAMES), num_examples, seed, _CHUNK)


class Shapes10(generated.Builder):
  """tfds builder of shapes10; `download_and_prepare` generates it, nothing is downloaded."""

  VERSION = tfds.core.Version("4.1.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "2.0.0": "Larger shapes (radius 10-14 px, was 6-13), within 3 px of the centre.",
      "3.0.0": "Colours vary across each image (a background gradient, the shape "
               "shifted from it), and small random discs of clutter.",
      "4.0.0": "Upright shapes on one-hue images (background and shape in opposite hues), no "
               "clutter or stripes: random features do poorly, and BYOL learns it at CPU scale.",
      "4.1.0": "A validation split of 2,000 images (seed 2); train and test are unchanged."
  }
  DESCRIPTION = __doc__
  IMAGE_SIZE, CLASS_NAMES, SPLIT_SIZES = IMAGE_SIZE, CLASS_NAMES, SPLIT_SIZES
  SPLIT_SEEDS = _SPLIT_SEEDS
  generate = staticmethod(generate)
