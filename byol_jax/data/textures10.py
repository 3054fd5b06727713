"""textures10: a second generated dataset, of a different kind than shapes10, offline.

Each image is one of ten periodic or random textures (the label) filling the whole frame, in two
random colours, with a random period, orientation and phase. Every class is its own mirror image
and fills the frame, so a random flip keeps the class and a crop of any part shows it; the
colours, period and orientation are what one image's crops share and other images mostly do not
(the colour jitter removes most of the colours' share: experiments/results/protocol_design.md),
and the class is a pattern that no augmentation varies.

Generation is deterministic (fixed seeds) vectorised numpy, as shapes10's.
"""
import numpy as np
import tensorflow_datasets as tfds

from byol_jax.data import augment
from byol_jax.data import generated

NAME = "textures10"
IMAGE_SIZE = 32
CLASS_NAMES = ("stripes", "checker", "dots", "grid", "waves", "zigzag", "blobs", "spots", "bricks",
               "crosses")
SPLIT_SIZES = {"train": 10_000, "validation": 2_000, "test": 2_000}
_SPLIT_SEEDS = {"train": 10, "validation": 12, "test": 11}
_SUPERSAMPLE = 2  # Anti-aliasing: drawn at 2x and box-filtered down.
_CHUNK = 500  # Images generated per vectorised step, to bound memory.
_PERIOD = (4.0, 8.0)  # Pixels per repeat: a 9 px crop (8% of the image) still shows one.
_NOISE = 0.03  # Standard deviation of the pixel noise.
_WAVES = 8  # Plane waves summed for a blob field.
_SPOTS = 40  # Random spots per image.


def _near_integer(t, width):
  """True within `width` (in periods) of an integer."""
  return np.abs(t - np.round(t)) < width


def _field(a, b, period, rng):
  """A smooth random field of wavelength about 2 periods: a sum of random plane waves."""
  n = a.shape[0]
  field = np.zeros(a.shape, dtype=np.float32)
  for _ in range(_WAVES):
    angle = rng.uniform(0, np.pi, (n, 1, 1, 1))
    wavelength = period * rng.uniform(1.5, 3.0, (n, 1, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1, 1))
    field += np.cos(2 * np.pi * (np.cos(angle) * a + np.sin(angle) * b) / wavelength + phase)
  return field


def _spots(a, b, period, rng):
  """Random discs over the frame (and a margin past it, where a rotated corner reaches)."""
  n, reach = a.shape[0], 0.7 * IMAGE_SIZE
  centre_a, centre_b = a.mean(axis=(1, 2), keepdims=True), b.mean(axis=(1, 2), keepdims=True)
  inside = np.zeros(a.shape, dtype=bool)
  for _ in range(_SPOTS):
    ca, cb = (centre + rng.uniform(-reach, reach, (n, 1, 1, 1)) for centre in (centre_a, centre_b))
    inside |= np.hypot(a - ca, b - cb) < 0.3 * period
  return inside


def _mask(label, a, b, period, rng):
  """The foreground of class `label` in rotated pixel coordinates a, b."""
  u, v = a / period, b / period
  if label == 0:  # stripes
    return np.mod(u, 1.0) < 0.5
  if label == 1:  # checker
    return (np.floor(u) + np.floor(v)) % 2 == 0
  if label == 2:  # dots
    return np.hypot(u - np.round(u), v - np.round(v)) < 0.3
  if label == 3:  # grid
    return _near_integer(u, 0.12) | _near_integer(v, 0.12)
  if label == 4:  # waves
    return np.mod(u + 0.35 * np.sin(np.pi * v), 1.0) < 0.5
  if label == 5:  # zigzag
    return np.mod(u + 0.7 * np.abs(np.mod(v, 1.0) - 0.5), 1.0) < 0.5
  if label == 6:  # blobs
    return _field(a, b, period, rng) > 0
  if label == 7:  # spots
    return _spots(a, b, period, rng)
  if label == 8:  # bricks: rows one period high, bricks two long, alternate rows offset by one.
    row = np.floor(v)
    return ~(_near_integer(v, 0.1) | _near_integer((u + row) / 2, 0.06))
  du, dv = np.abs(u - np.round(u)), np.abs(v - np.round(v))  # crosses
  return ((du < 0.1) & (dv < 0.35)) | ((dv < 0.1) & (du < 0.35))


def _colours(n, rng):
  """Two colours per image, [N, 1, 1, 3] each: distinct hues, one darker than the other."""
  hue = rng.uniform(0, 1, (n, 1, 1, 1))
  other = np.mod(hue + rng.uniform(0.25, 0.75, (n, 1, 1, 1)), 1.0)
  saturation = rng.uniform(0.4, 0.9, (n, 1, 1, 1))
  dark, bright = rng.uniform(0.2, 0.45, (n, 1, 1, 1)), rng.uniform(0.7, 0.95, (n, 1, 1, 1))

  def rgb(h, v):
    return np.asarray(augment.hsv_to_rgb(np.concatenate([h, saturation, v], -1).astype(np.float32)))

  return rgb(hue, dark), rgb(other, bright)


def _draw(labels, rng):
  """Draws one chunk of images, float in [0, 1], [N, IMAGE_SIZE, IMAGE_SIZE, 3]."""
  n, size = len(labels), IMAGE_SIZE
  fine = ((np.arange(size * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE - size / 2).astype(np.float32)
  x, y = fine[None, None, :, None], fine[None, :, None, None]
  angle = rng.uniform(0, np.pi, (n, 1, 1, 1)).astype(np.float32)
  shift = rng.uniform(0, 100, (n, 2, 1, 1, 1)).astype(np.float32)  # The phase, in pixels.
  a = np.cos(angle) * x + np.sin(angle) * y + shift[:, 0]
  b = -np.sin(angle) * x + np.cos(angle) * y + shift[:, 1]
  period = rng.uniform(*_PERIOD, (n, 1, 1, 1)).astype(np.float32)
  inside = np.empty(a.shape, dtype=bool)
  for label in range(len(CLASS_NAMES)):
    chosen = labels == label
    inside[chosen] = _mask(label, a[chosen], b[chosen], period[chosen], rng)
  alpha = inside.reshape(n, size, _SUPERSAMPLE, size, _SUPERSAMPLE, 1).mean(axis=(2, 4))
  dark, bright = _colours(n, rng)
  swap = rng.uniform(size=(n, 1, 1, 1)) < 0.5  # Either colour may be the pattern's.
  background, foreground = np.where(swap, bright, dark), np.where(swap, dark, bright)
  image = alpha * foreground + (1 - alpha) * background
  noise = rng.standard_normal(image.shape, dtype=np.float32) * _NOISE
  return np.clip(image + noise, 0, 1)


def generate(num_examples, seed):
  """Returns `num_examples` images (uint8 [N, 32, 32, 3]) and balanced labels (int64 [N])."""
  return generated.generate(_draw, len(CLASS_NAMES), num_examples, seed, _CHUNK)


class Textures10(generated.Builder):
  """tfds builder of textures10; `download_and_prepare` generates it, nothing is downloaded."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  DESCRIPTION = __doc__
  IMAGE_SIZE, CLASS_NAMES, SPLIT_SIZES = IMAGE_SIZE, CLASS_NAMES, SPLIT_SIZES
  SPLIT_SEEDS = _SPLIT_SEEDS
  generate = staticmethod(generate)
