"""BYOL's colour and blur augmentations, on device, in pure JAX.

The host pipeline only crops, flips and resizes (uint8); everything here runs per example under
`jax.vmap`, inside the jitted train step, from per-example PRNG keys. Per-example keys come from
the example's position in the global batch (`example_keys`), so a run draws the same
augmentations whatever the number of devices or hosts.

Parameters of a view are a mapping (a plain dict, or an ml_collections ConfigDict with the same
keys) of Python floats:

  color_jitter_prob: probability of colour jitter (brightness, contrast, saturation, hue in a
    random order, each clipped to [0, 1]).
  brightness: additive brightness offset drawn from [-brightness, brightness].
  contrast, saturation: multiplicative factors drawn from [1 - s, 1 + s].
  hue: hue offset, in turns, drawn from [-hue, hue].
  grayscale_prob: probability of converting to grayscale (after colour jitter).
  blur_prob, blur_sigma_min, blur_sigma_max: probability and sigma range (pixels) of the Gaussian
    blur; its kernel is about 10% of the image side (`blur_kernel_size`).
  blur_padding: what the blur sees past the border: "zeros" (the official code's, which darkens
    the rim) or "reflect" (the image mirrored, no rim).
  solarize_prob: probability of solarization.

A probability or strength of exactly 0 removes that operation from the computation.
"""
import jax
import jax.numpy as jnp

VIEW1 = {
    "color_jitter_prob": 0.8,
    "brightness": 0.4,
    "contrast": 0.4,
    "saturation": 0.2,
    "hue": 0.1,
    "grayscale_prob": 0.2,
    "blur_prob": 1.0,
    "blur_sigma_min": 0.1,
    "blur_sigma_max": 2.0,
    "blur_padding": "zeros",
    "solarize_prob": 0.0,
}
VIEW2 = {**VIEW1, "blur_prob": 0.1, "solarize_prob": 0.2}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LUMA = (0.2989, 0.5870, 0.1140)  # ITU-R 601, as in tf.image.rgb_to_grayscale.


def to_float(images):
  """uint8 [0, 255] to float32 [0, 1]; float input is taken to be in [0, 1] already."""
  if jnp.issubdtype(images.dtype, jnp.integer):
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def normalize(images):
  """Standardises with the ImageNet mean and std; uint8 input is scaled to [0, 1] first."""
  mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
  std = jnp.asarray(IMAGENET_STD, jnp.float32)
  return (to_float(images) - mean) / std


def brightness(image, delta):
  return image + delta


def contrast(image, factor):
  """Scales each channel's deviation from its mean over the image (like tf.image)."""
  mean = jnp.mean(image, axis=(-3, -2), keepdims=True)
  return (image - mean) * factor + mean


def saturation(image, factor):
  """Multiplies HSV saturation by `factor` (clipped to 1), keeping hue and value.

  At fixed hue and value every channel lies on the line from the value to the gray level, so
  scaling saturation moves each channel towards or away from the maximum channel: no HSV round trip
  is needed.
  """
  value = jnp.max(image, axis=-1, keepdims=True)
  chroma = value - jnp.min(image, axis=-1, keepdims=True)
  sat = jnp.where(value > 0, chroma / jnp.where(value > 0, value, 1.0), 0.0)
  new_sat = jnp.clip(sat * factor, 0.0, 1.0)
  ratio = jnp.where(sat > 0, new_sat / jnp.where(sat > 0, sat, 1.0), 1.0)
  return value - (value - image) * ratio


def rgb_to_hsv(image):
  """RGB in [0, 1] to HSV, all channels in [0, 1]."""
  r, g, b = image[..., 0], image[..., 1], image[..., 2]
  value = jnp.max(image, axis=-1)
  chroma = value - jnp.min(image, axis=-1)
  safe_chroma = jnp.where(chroma > 0, chroma, 1.0)
  sat = jnp.where(value > 0, chroma / jnp.where(value > 0, value, 1.0), 0.0)
  hue = jnp.where(value == r, jnp.mod((g - b) / safe_chroma, 6.0),
                  jnp.where(value == g, (b - r) / safe_chroma + 2.0, (r - g) / safe_chroma + 4.0))
  hue = jnp.where(chroma > 0, hue / 6.0, 0.0)
  return jnp.stack([hue, sat, value], axis=-1)


def hsv_to_rgb(image):
  """HSV in [0, 1] (hue in turns) to RGB in [0, 1]."""
  hue, sat, value = image[..., 0:1], image[..., 1:2], image[..., 2:3]
  k = jnp.mod(jnp.asarray([5.0, 3.0, 1.0]) + hue * 6.0, 6.0)
  return value - value * sat * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


def hue(image, delta):
  """Rotates the hue by `delta` turns."""
  hsv = rgb_to_hsv(image)
  hsv = hsv.at[..., 0].set(jnp.mod(hsv[..., 0] + delta, 1.0))
  return hsv_to_rgb(hsv)


def grayscale(image):
  luma = jnp.tensordot(image, jnp.asarray(_LUMA, image.dtype), axes=[[-1], [0]])
  return jnp.repeat(luma[..., None], image.shape[-1], axis=-1)


def blur_kernel_size(image_size):
  """About 10% of the image side, odd, at least 3: 23 at 224 px, 3 at 32 px."""
  return 2 * max(1, image_size // 20) + 1


# blur_padding -> jnp.pad's mode.
_PAD_MODES = {"zeros": "constant", "reflect": "reflect"}
BLUR_PADDINGS = tuple(_PAD_MODES)


def gaussian_blur(image, sigma, kernel_size, padding="zeros"):
  """Separable Gaussian blur of one [H, W, C] image, zero-padded by default as the official code.

  Zeros outside the image darken a rim of `kernel_size // 2` pixels, as the official depthwise
  SAME convolution does. At 32 px that rim marks a blurred view so plainly that a network can
  tell the two views apart by it (shapes10 runs, in the git history of
  experiments/results/reproduction.md); "reflect" has no rim.
  """
  radius = kernel_size // 2
  offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  weights = jnp.exp(-0.5 * jnp.square(offsets / sigma))
  weights /= jnp.sum(weights)

  def blur_axis(x, axis):
    pad_width = [(0, 0)] * x.ndim
    pad_width[axis] = (radius, radius)
    padded = jnp.pad(x, pad_width, mode=_PAD_MODES[padding])
    size = x.shape[axis]
    return sum(weights[t] * jax.lax.slice_in_dim(padded, t, t + size, axis=axis)
               for t in range(kernel_size))

  return blur_axis(blur_axis(image, 0), 1)


def solarize(image, threshold=0.5):
  return jnp.where(image < threshold, image, 1.0 - image)


_PARAM_KEYS = frozenset(VIEW1)


def _view_params(params):
  """Checks the keys (a typo would silently disable an augmentation); reads Python floats."""
  keys = set(params.keys())
  if keys != _PARAM_KEYS:
    raise ValueError(f"View parameters must have exactly the keys {sorted(_PARAM_KEYS)}; missing "
                     f"{sorted(_PARAM_KEYS - keys)}, unexpected {sorted(keys - _PARAM_KEYS)}.")
  if params["blur_padding"] not in BLUR_PADDINGS:
    raise ValueError(f"blur_padding={params['blur_padding']!r} must be one of {BLUR_PADDINGS}.")
  return {k: params[k] if k == "blur_padding" else float(params[k]) for k in _PARAM_KEYS}


def _color_jitter(image, key, p):
  """Brightness, contrast, saturation and hue in a random order, each followed by a clip."""
  order_key, *keys = jax.random.split(key, 5)
  ops = []
  if p["brightness"] > 0:
    delta = jax.random.uniform(keys[0], (), minval=-p["brightness"], maxval=p["brightness"])
    ops.append(lambda x: brightness(x, delta))
  if p["contrast"] > 0:
    factor_c = jax.random.uniform(keys[1], (), minval=1 - p["contrast"], maxval=1 + p["contrast"])
    ops.append(lambda x: contrast(x, factor_c))
  if p["saturation"] > 0:
    factor_s = jax.random.uniform(keys[2], (), minval=1 - p["saturation"],
                                  maxval=1 + p["saturation"])
    ops.append(lambda x: saturation(x, factor_s))
  if p["hue"] > 0:
    delta_h = jax.random.uniform(keys[3], (), minval=-p["hue"], maxval=p["hue"])
    ops.append(lambda x: hue(x, delta_h))
  if not ops:
    return image
  clipped = [lambda x, op=op: jnp.clip(op(x), 0.0, 1.0) for op in ops]
  order = jax.random.permutation(order_key, len(ops))
  # A loop rather than an unrolled sequence: the step compiles one copy of each op, not four.
  return jax.lax.fori_loop(0, len(ops), lambda i, x: jax.lax.switch(order[i], clipped, x), image)


def _augment_one(image, key, p):
  """Augments one float [H, W, 3] image in [0, 1]; the result stays in [0, 1]."""
  (jitter_key, jitter_apply, gray_apply, blur_key, blur_apply,
   solarize_apply) = jax.random.split(key, 6)

  def maybe(apply_key, prob, fn, x):
    if prob <= 0:
      return x
    return jnp.where(jax.random.uniform(apply_key) < prob, fn(x), x)

  image = maybe(jitter_apply, p["color_jitter_prob"], lambda x: _color_jitter(x, jitter_key, p),
                image)
  image = maybe(gray_apply, p["grayscale_prob"], grayscale, image)

  def blur(x):
    sigma = jax.random.uniform(blur_key, (), minval=p["blur_sigma_min"], maxval=p["blur_sigma_max"])
    return gaussian_blur(x, sigma, blur_kernel_size(min(x.shape[0], x.shape[1])), p["blur_padding"])

  image = maybe(blur_apply, p["blur_prob"], blur, image)
  image = maybe(solarize_apply, p["solarize_prob"], solarize, image)
  return jnp.clip(image, 0.0, 1.0)  # The blur's float rounding can overshoot 1 by an ulp.


def augment_unnormalized(images, keys, params):
  """Augments a batch [B, H, W, 3] (uint8, or float in [0, 1]); float32 in [0, 1] out."""
  p = _view_params(params)
  return jax.vmap(lambda x, k: _augment_one(x, k, p))(to_float(images), keys)


def augment_view(images, keys, params):
  """BYOL's on-device augmentation of one view, then ImageNet normalisation.

  Args:
    images: uint8 [B, H, W, 3], already cropped, flipped and resized by the host.
    keys: [B] PRNG keys, one per example (see `example_keys`).
    params: the view's parameters, e.g. VIEW1 or VIEW2 (see the module docstring).

  Returns:
    float32 [B, H, W, 3].
  """
  return normalize(augment_unnormalized(images, keys, params))


def example_keys(seed, step, global_indices, view):
  """Per-example keys from (seed, step, view, global position in the global batch).

  Args:
    seed: the run's integer seed.
    step: the training step (may be traced).
    global_indices: int32 [B], each example's position within the global batch (the pipeline's
      "index").
    view: 0 or 1 (or any int), so the two views of an image draw independently.

  Returns:
    [B] typed PRNG keys (`jax.random.key`), identical for the same global index whatever the
    device layout.
  """
  key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), step), view)
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(global_indices))
