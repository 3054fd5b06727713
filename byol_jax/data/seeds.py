"""Stateless TF seeds: every random stream of the host pipeline, folded from the run's seed.

A stream is a pure function of its seed, so a resumed run recomputes the crops, flips and epoch
orders it skips instead of storing them. The tags keep streams of different purposes apart.
"""
import tensorflow as tf

ORDER, CROP = 1, 2  # Epoch orders and shuffles; crops and flips.


def fold_in(seed, *values):
  """Folds integers (or integer scalar tensors) into a stateless-op seed, int64 [2]."""
  for value in values:
    seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(value, tf.int64))
  return seed


def of(*values):
  """A seed from integers alone (e.g. the run's seed, a tag, a host)."""
  return fold_in(tf.zeros([2], tf.int64), *values)


def shuffle_seed(seed):
  """A stateless seed as the int64 scalar that Dataset.shuffle takes."""
  return tf.random.stateless_uniform([], seed=seed, minval=0, maxval=2**31 - 1, dtype=tf.int64)
