"""Input data: host pipelines (tfds + tf.data) and on-device augmentation (pure JAX).

Only the TensorFlow-free augmentation API is imported here, so accelerator machines without
TensorFlow can use it. The host pipeline (`sources` -> `crops` -> `pipeline`, seeded by `seeds`)
and the embedded dataset need TensorFlow and are imported explicitly:
`from byol_jax.data import pipeline`.
"""
from byol_jax.data.augment import augment_unnormalized
from byol_jax.data.augment import augment_view
from byol_jax.data.augment import example_keys
from byol_jax.data.augment import normalize
from byol_jax.data.augment import VIEW1
from byol_jax.data.augment import VIEW2

__all__ = [
    "VIEW1",
    "VIEW2",
    "augment_unnormalized",
    "augment_view",
    "example_keys",
    "normalize",
]
