"""shapes10: a small labelled image dataset that generates itself, offline.

It lets the quick start, the tests and the CPU-scale reproduction run the real tfds/tf.data input
path (PNG records, decode, crops) without any download. Each image shows one of ten shapes (the
label) with a random size, aspect, rotation and a small random shift. Colour carries no label
information and differs between two crops of one image: the background runs across the image
between two random colours (plus faint stripes), the shape's colour is the local background's
shifted by a random amount in every channel, and a few small discs of random colour lie anywhere
on top. So matching two views by their colours works poorly and the shape is the cue they share
best, colour and clutter are nuisances for a random network's features, and pose and colour vary
too much for a linear classifier on raw pixels
(tests/test_data.py: ridge regression on the pixels stays near chance). Version 2 drew the
shapes larger and nearer the centre than version 1; version 3 added the colour fields and the
clutter (version 2 had one colour per image, shared by every crop).

Generation is deterministic (fixed seeds) vectorised numpy; the tfds build also PNG-encodes and
writes the records, in seconds.
"""
import numpy as np
import tensorflow_datasets as tfds

NAME = "shapes10"
IMAGE_SIZE = 32
CLASS_NAMES = ("disc", "ring", "triangle", "square", "plus", "star", "crescent", "half_disc",
               "corner", "bar")
SPLIT_SIZES = {"train": 10_000, "test": 2_000}
_SPLIT_SEEDS = {"train": 0, "test": 1}
_SUPERSAMPLE = 2  # Anti-aliasing: shapes are drawn at 2x and box-filtered down.
_CHUNK = 1_000  # Images generated per vectorised step, to bound memory.
_CLUTTER = 4  # Random small discs per image.


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


def _draw(labels, rng):
  """Draws one chunk of images, float in [0, 1], [N, IMAGE_SIZE, IMAGE_SIZE, 3]."""
  n, size = len(labels), IMAGE_SIZE

  def uniform(low, high, channels=1):  # One draw per image, broadcastable to [N, H, W, C].
    return rng.uniform(low, high, (n, 1, 1, channels)).astype(np.float32)

  # Shape alpha, drawn at a higher resolution then box-filtered.
  fine = ((np.arange(size * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE).astype(np.float32)
  x, y = fine[None, None, :, None], fine[None, :, None, None]
  cx, cy, radius = uniform(13, 19), uniform(13, 19), uniform(10, 14)  # Shape spans 20-28 px.
  aspect, angle = np.exp(uniform(-0.25, 0.25)), uniform(0, 2 * np.pi)
  dx, dy = (x - cx) / radius, (y - cy) / radius
  u = (np.cos(angle) * dx + np.sin(angle) * dy) * aspect
  v = (np.cos(angle) * dy - np.sin(angle) * dx) / aspect
  inside = np.empty(u.shape, dtype=bool)
  for label, inside_fn in enumerate(_INSIDE):
    chosen = labels == label
    inside[chosen] = inside_fn(u[chosen], v[chosen])
  alpha = inside.reshape(n, size, _SUPERSAMPLE, size, _SUPERSAMPLE, 1).mean(axis=(2, 4))

  # Colour fields: the background runs linearly between two random colours along a random
  # direction across the image, so two crops of one image see different colours; the foreground
  # is the local background shifted by 0.25 to 0.75 in every channel (mod 1), so it always
  # contrasts with its surround.
  coarse = (np.arange(size, dtype=np.float32) / size) - 0.5
  coarse_px = np.arange(size, dtype=np.float32) + 0.5
  x, y = coarse[None, None, :, None], coarse[None, :, None, None]
  field_angle = uniform(0, 2 * np.pi)
  along = 0.5 + np.cos(field_angle) * x + np.sin(field_angle) * y  # About [0, 1] across.
  start, stop = uniform(0, 1, 3), uniform(0, 1, 3)
  background = start + (stop - start) * along
  stripe_angle = uniform(0, np.pi)
  across = np.cos(stripe_angle) * x + np.sin(stripe_angle) * y
  stripes = 0.5 + 0.5 * np.sin(2 * np.pi * uniform(1, 5) * across + uniform(0, 2 * np.pi))
  background = background + (uniform(0, 1, 3) - background) * stripes * uniform(0, 0.35)
  foreground = np.mod(background + uniform(0.25, 0.75, 3), 1.0)
  image = alpha * foreground + (1 - alpha) * background
  # Clutter: small discs of random colours at random places, over shape and background alike,
  # which no two crops share in the same way.
  for _ in range(_CLUTTER):
    blob_x, blob_y, blob_r = uniform(0, size), uniform(0, size), uniform(1, 3)
    blob = (np.hypot(coarse_px[None, None, :, None] - blob_x,
                     coarse_px[None, :, None, None] - blob_y) < blob_r)
    image = np.where(blob, uniform(0, 1, 3), image)
  noise = rng.standard_normal(image.shape, dtype=np.float32) * uniform(0, 0.06)
  return np.clip(image + noise, 0, 1)


def generate(num_examples, seed):
  """Returns `num_examples` images (uint8 [N, 32, 32, 3]) and balanced labels (int64 [N])."""
  rng = np.random.default_rng(seed)
  labels = rng.permutation(np.arange(num_examples) % len(CLASS_NAMES)).astype(np.int64)
  images = np.concatenate(
      [_draw(labels[start:start + _CHUNK], rng) for start in range(0, num_examples, _CHUNK)])
  return np.round(images * 255).astype(np.uint8), labels


class Shapes10(tfds.core.GeneratorBasedBuilder):
  """tfds builder of shapes10; `download_and_prepare` generates the data, nothing is downloaded."""

  VERSION = tfds.core.Version("3.0.0")
  RELEASE_NOTES = {
      "1.0.0": "Initial release.",
      "2.0.0": "Larger shapes (radius 10-14 px, was 6-13), within 3 px of the centre.",
      "3.0.0": "Colours vary across each image (a background gradient, the shape "
               "shifted from it), and small random discs of clutter."
  }
  # No files (checksums, metadata) live beside this builder. Saying so also keeps tfds 4.9.10 from
  # resolving the source folder through importlib_resources, which it imports but does not require.
  code_path = None

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(split) for split in SPLIT_SIZES}

  def _generate_examples(self, split):
    images, labels = generate(SPLIT_SIZES[split], _SPLIT_SEEDS[split])
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image, "label": label}
