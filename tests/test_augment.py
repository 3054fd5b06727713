"""Tests of the on-device augmentations (pure JAX, no TensorFlow)."""
import colorsys
import functools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byol_jax.data import augment

# Every probability and strength zero.
OFF = {k: v if isinstance(v, str) else 0.0 for k, v in augment.VIEW1.items()}


def _images(n, size=8, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _keys(n, seed=0, step=0, view=0):
  return augment.example_keys(seed, step, jnp.arange(n), view)


@functools.lru_cache(maxsize=None)
def _jitted(items):
  """augment_unnormalized jitted for the view parameters `items` (hashable, static)."""
  return jax.jit(functools.partial(augment.augment_unnormalized, params=dict(items)))


def _augment01(images, keys, params):
  return np.asarray(_jitted(tuple(sorted(params.items())))(images, keys))


def test_importing_the_data_package_does_not_import_tensorflow():
  code = "import sys, byol_jax.data; assert 'tensorflow' not in sys.modules, 'TF imported'"
  subprocess.run([sys.executable, "-c", code], check=True)


def _batch(n=64):
  images = _images(n)
  images[:8] = 0
  images[8:16] = 255
  return images


@pytest.mark.parametrize("params", [augment.VIEW1, augment.VIEW2], ids=["view1", "view2"])
def test_deterministic_for_a_key_different_across_keys_and_in_unit_range(params):
  images = _batch()
  a = _augment01(images, _keys(64), params)
  assert a.dtype == np.float32 and a.shape == images.shape
  assert a.min() >= 0.0 and a.max() <= 1.0  # Before normalisation.
  np.testing.assert_array_equal(a, _augment01(images, _keys(64), params))
  for other_keys in (_keys(64, seed=1), _keys(64, step=1), _keys(64, view=1)):
    c = _augment01(images, other_keys, params)
    # An example can come out unaugmented under both keys (p = 0.14 for view 2's draws).
    assert np.mean([not np.allclose(a[i], c[i]) for i in range(16, 64)]) > 0.7


def test_keys_and_outputs_do_not_depend_on_how_the_batch_is_split():
  indices = jnp.arange(64)
  whole = augment.example_keys(3, 7, indices, 1)
  parts = [augment.example_keys(3, 7, indices[i:i + 16], 1) for i in range(0, 64, 16)]
  np.testing.assert_array_equal(jax.random.key_data(whole),
                                np.concatenate([jax.random.key_data(k) for k in parts]))

  # Sharded over the 4 fake devices, as in the train step; augment_view also normalises.
  images = _batch()
  per_device = jax.pmap(
      lambda x, i: augment.augment_view(x, augment.example_keys(3, 7, i, 1), augment.VIEW2))(
          images.reshape(4, 16, 8, 8, 3), indices.reshape(4, 16))
  expected = augment.normalize(_augment01(images, whole, augment.VIEW2))
  np.testing.assert_allclose(np.asarray(per_device).reshape(images.shape), expected, atol=1e-5)


def test_zero_probabilities_give_the_identity():
  images = _images(16)
  np.testing.assert_allclose(_augment01(images, _keys(16), OFF), images / 255, rtol=1e-6)


def test_zero_strengths_give_the_identity():
  params = {
      **OFF, "color_jitter_prob": 1.0, "blur_prob": 1.0, "blur_sigma_min": 1e-3,
      "blur_sigma_max": 1e-3
  }
  images = _images(16)
  np.testing.assert_allclose(_augment01(images, _keys(16), params), images / 255, atol=1e-6)

  x = jnp.asarray(images[0] / 255, jnp.float32)
  for identity in (augment.brightness(x, 0.0), augment.contrast(x, 1.0), augment.saturation(x, 1.0),
                   augment.hue(x, 0.0), augment.hue(x, 1.0), augment.gaussian_blur(x, 1e-3, 3)):
    np.testing.assert_allclose(identity, x, atol=1e-5)


# Observable effect of each operation on a random (noisy, colourful) image.
_EFFECTS = {
    "color_jitter_prob": lambda x, y: np.abs(y - x).max(axis=(1, 2, 3)) > 1e-6,
    "grayscale_prob": lambda x, y: (np.ptp(y, axis=-1) == 0).all(axis=(1, 2)),
    "blur_prob": lambda x, y: np.abs(y - x).max(axis=(1, 2, 3)) > 1e-6,
    "solarize_prob": lambda x, y: np.abs(y - x).max(axis=(1, 2, 3)) > 1e-6,
}


@pytest.mark.parametrize("view", ["VIEW1", "VIEW2"])
@pytest.mark.parametrize("prob_key", list(_EFFECTS))
def test_application_rates_match_the_probabilities(view, prob_key):
  full = getattr(augment, view)
  strengths = {k: v for k, v in full.items() if not k.endswith("_prob")}
  # Sigma from 1 pixel, so that every blur is visible on an 8x8 image.
  params = {**OFF, **strengths, "blur_sigma_min": 1.0, prob_key: full[prob_key]}
  n = 2000
  images = _images(n, seed=1)
  out = _augment01(images, _keys(n, seed=2), params)
  rate = _EFFECTS[prob_key](images / np.float32(255), out).mean()
  p = full[prob_key]
  tolerance = 4.5 * np.sqrt(p * (1 - p) / n)
  assert abs(rate - p) <= tolerance, (view, prob_key, rate, p)


def test_grayscale_has_equal_channels_with_luma():
  x = jnp.asarray(_images(1)[0] / 255, jnp.float32)
  y = np.asarray(augment.grayscale(x))
  np.testing.assert_array_equal(y[..., 0], y[..., 1])
  np.testing.assert_array_equal(y[..., 0], y[..., 2])
  np.testing.assert_allclose(y[..., 0],
                             np.asarray(x) @ np.array([0.2989, 0.5870, 0.1140]), atol=1e-6)


def test_solarize_matches_its_formula():
  x = jnp.linspace(0.0, 1.0, 101)
  np.testing.assert_array_equal(augment.solarize(x), np.where(x < 0.5, x, 1.0 - x))


def test_saturation_and_hue_match_colorsys():
  pixels = np.random.default_rng(0).uniform(size=(200, 3)).astype(np.float32)
  hsv = np.array([colorsys.rgb_to_hsv(*p) for p in pixels])
  np.testing.assert_allclose(augment.rgb_to_hsv(pixels), hsv, atol=1e-5)
  for factor in (0.0, 0.7, 1.3):
    expected = [colorsys.hsv_to_rgb(h, min(s * factor, 1.0), v) for h, s, v in hsv]
    np.testing.assert_allclose(augment.saturation(pixels, factor), expected, atol=1e-5)
  for delta in (-0.1, 0.05, 0.5):
    expected = [colorsys.hsv_to_rgb((h + delta) % 1.0, s, v) for h, s, v in hsv]
    np.testing.assert_allclose(augment.hue(pixels, delta), expected, atol=1e-5)


def _depthwise_gaussian_blur(image, sigma, kernel_size):
  """The official BYOL blur: two depthwise SAME convolutions (zero padding) of a 1-D Gaussian."""
  radius = kernel_size // 2
  taps = np.exp(-np.arange(-radius, radius + 1)**2 / (2 * sigma**2))
  taps = jnp.asarray(taps / taps.sum(), jnp.float32)
  channels = image.shape[-1]

  def conv(x, kernel):
    return jax.lax.conv_general_dilated(x, jnp.tile(kernel, (1, 1, 1, channels)), (1, 1), "SAME",
                                        feature_group_count=channels,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  out = conv(image[None], taps.reshape(1, -1, 1, 1))
  return conv(out, taps.reshape(-1, 1, 1, 1))[0]


@pytest.mark.parametrize("size,sigma", [(32, 0.7), (32, 2.0), (20, 1.3)])
def test_blur_is_the_official_zero_padded_depthwise_convolution(size, sigma):
  image = jnp.asarray(_images(1, size=size)[0] / 255, jnp.float32)
  kernel = augment.blur_kernel_size(size)
  np.testing.assert_allclose(augment.gaussian_blur(image, sigma, kernel),
                             _depthwise_gaussian_blur(image, sigma, kernel), atol=1e-6)


def test_reflect_padding_blurs_without_a_rim():
  x = jnp.full((9, 9, 3), 0.3)
  np.testing.assert_allclose(augment.gaussian_blur(x, 2.0, 5, "reflect"), x, atol=1e-6)
  image = jnp.asarray(_images(1, size=8)[0] / 255, jnp.float32)
  mirrored = jnp.pad(image, [(2, 2), (2, 2), (0, 0)], mode="reflect")
  np.testing.assert_allclose(augment.gaussian_blur(image, 1.5, 5, "reflect"),
                             _depthwise_gaussian_blur(mirrored, 1.5, 5)[2:-2, 2:-2], atol=1e-6)
  with pytest.raises(ValueError, match="blur_padding='edge'"):
    augment.augment_view(_images(1), _keys(1), {**augment.VIEW1, "blur_padding": "edge"})


def test_blur_darkens_the_rim_of_a_constant_image_and_smooths_noise():
  x = jnp.full((9, 9, 3), 0.3)
  blurred = augment.gaussian_blur(x, 2.0, 5)
  np.testing.assert_allclose(blurred[2:-2, 2:-2], x[2:-2, 2:-2], atol=1e-6)  # Interior.
  assert float(blurred[0, 0, 0]) < 0.3 * 0.7 and float(blurred[0, 4, 0]) < 0.3 * 0.9
  noise = jnp.asarray(_images(1, size=32)[0] / 255, jnp.float32)
  assert np.std(augment.gaussian_blur(noise, 2.0, 7)[3:-3, 3:-3]) < 0.5 * np.std(noise)
  assert augment.blur_kernel_size(224) == 23
  assert augment.blur_kernel_size(32) == 3
  assert augment.blur_kernel_size(8) == 3


def test_normalize_uses_imagenet_statistics():
  images = _images(2)
  out = augment.normalize(images)
  np.testing.assert_allclose(out, augment.normalize(images / np.float32(255)), atol=1e-6)
  np.testing.assert_allclose(out, (images / 255 - np.array(augment.IMAGENET_MEAN)) /
                             np.array(augment.IMAGENET_STD), atol=1e-5)


def test_params_with_a_wrong_key_are_rejected():
  params = {**augment.VIEW1, "solarise_prob": 0.2}
  del params["solarize_prob"]
  with pytest.raises(ValueError, match="solarise_prob"):
    augment.augment_view(_images(1), _keys(1), params)
