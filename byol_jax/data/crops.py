"""Decoding and the host's view geometry: random-resized crops, flips, centre crops (uint8).

JPEGs are decoded only inside their crop window (fused decode and crop); other formats are decoded
whole, then cropped.
"""
import numpy as np
import tensorflow as tf

from byol_jax.data import seeds

CROP_MIN_AREA = 0.08  # BYOL's random-resized-crop keeps 8% to 100% of the image.


def decode(image_bytes):
  image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def resize(image, size):
  image = tf.image.resize(image, [size, size], method="bicubic")
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def random_window(shape, seed, min_area):
  """[y, x, h, w] of a random crop, drawn as the official BYOL code draws it.

  The area is uniform in [min_area, 1] of the image's, the aspect ratio w / h log-uniform in
  [3/4, 4/3]; w and h are rounded, clamped to the image, and the offsets are uniform. There are no
  retries and no fallback (tf.image.sample_distorted_bounding_box has both, and gives smaller
  crops: a mean area of about 0.4 of the image against 0.54).
  """
  height, width = shape[0], shape[1]
  area_fraction, log_ratio = tf.unstack(
      tf.random.stateless_uniform([2], seed=seed, minval=[min_area, np.log(3 / 4)],
                                  maxval=[1.0, np.log(4 / 3)]))
  area = area_fraction * tf.cast(height * width, tf.float32)
  ratio = tf.exp(log_ratio)
  w = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area * ratio)), tf.int32), 1, width)
  h = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area / ratio)), tf.int32), 1, height)
  offsets = tf.random.stateless_uniform([2], seed=seeds.fold_in(seed, 1), minval=0.0, maxval=1.0)
  y = tf.cast(tf.floor(offsets[0] * tf.cast(height - h + 1, tf.float32)), tf.int32)
  x = tf.cast(tf.floor(offsets[1] * tf.cast(width - w + 1, tf.float32)), tf.int32)
  return tf.stack([tf.minimum(y, height - h), tf.minimum(x, width - w), h, w])


def random_views(image_bytes, image_size, seed, num_views, min_area=CROP_MIN_AREA):
  """`num_views` independent random-resized-crop + flip views, uint8 [V, S, S, 3]."""
  view_seeds = [
      (seeds.fold_in(seed, 2 * v), seeds.fold_in(seed, 2 * v + 1)) for v in range(num_views)
  ]

  def jpeg_crops():
    shape = tf.image.extract_jpeg_shape(image_bytes)
    return [
        tf.image.decode_and_crop_jpeg(image_bytes, random_window(shape, s, min_area), channels=3)
        for s, _ in view_seeds
    ]

  def decoded_crops():
    image = decode(image_bytes)
    crops = []
    for s, _ in view_seeds:
      y, x, h, w = tf.unstack(random_window(tf.shape(image), s, min_area))
      crops.append(image[y:y + h, x:x + w])
    return crops

  def views(crops):
    return tf.stack([
        tf.image.stateless_random_flip_left_right(resize(crop, image_size), f)
        for crop, (_, f) in zip(crops, view_seeds)
    ])

  return tf.cond(tf.io.is_jpeg(image_bytes), lambda: views(jpeg_crops()),
                 lambda: views(decoded_crops()))


def center_view(image_bytes, image_size, crop_fraction):
  """The central square of `crop_fraction` of the shorter side, resized to `image_size`.

  Equivalent to resizing the shorter side to image_size / crop_fraction and centre-cropping
  image_size (256 -> 224 by default), and it also works for images smaller than the crop.
  """

  def window(shape):
    h, w = shape[0], shape[1]
    side = tf.maximum(
        1, tf.cast(tf.round(crop_fraction * tf.cast(tf.minimum(h, w), tf.float32)), tf.int32))
    return tf.stack([(h - side + 1) // 2, (w - side + 1) // 2, side, side])

  def jpeg_crop():
    return tf.image.decode_and_crop_jpeg(image_bytes,
                                         window(tf.image.extract_jpeg_shape(image_bytes)),
                                         channels=3)

  def decoded_crop():
    image = decode(image_bytes)
    y, x, h, w = tf.unstack(window(tf.shape(image)))
    return image[y:y + h, x:x + w]

  crop = tf.cond(tf.io.is_jpeg(image_bytes), jpeg_crop, decoded_crop)
  return resize(crop, image_size)
