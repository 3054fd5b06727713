"""Losses of BYOL and SimCLR, the online probe's cross-entropy, and collapse monitors.

Every function works on one replica's slice of the batch. Where the math needs the whole global
batch (SimCLR's negatives), an `axis_name` names the mapped axis to gather over; with
`axis_name=None` the local batch is the whole batch.
"""
from typing import Optional

import chex
import jax
import jax.numpy as jnp


def _l2_normalize(x, eps=1e-12):
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


def regression_loss(prediction, target):
  """BYOL's per-example 2 - 2 cos(p, z'); the target is under stop_gradient."""
  p = _l2_normalize(prediction)
  z = _l2_normalize(jax.lax.stop_gradient(target))
  return 2.0 - 2.0 * jnp.sum(p * z, axis=-1)


def byol_loss(prediction_1, prediction_2, target_1, target_2):
  """Symmetric BYOL loss: view 1 predicts view 2 plus view 2 predicts view 1.

  The two directions are summed (as the official code does), not averaged: averaging halves the
  effective learning rate of the online network and costs accuracy.
  """
  chex.assert_rank(prediction_1, 2)  # [batch, dim]: a stray axis would broadcast silently.
  chex.assert_equal_shape([prediction_1, prediction_2, target_1, target_2])
  return jnp.mean(regression_loss(prediction_1, target_2) + regression_loss(prediction_2, target_1))


def _global_batch(x, axis_name):
  if axis_name is None:
    return x, 0
  offset = jax.lax.axis_index(axis_name) * x.shape[0]
  return jax.lax.all_gather(x, axis_name, tiled=True), offset


def infonce_loss(z1, z2, temperature, axis_name: Optional[str] = None):
  """SimCLR's NT-Xent loss with the negatives of the whole global batch.

  For an anchor z1_i the positive is z2_i; the negatives are every other z1_j and z2_j of the
  global batch (2N - 2 of them). The loss is the sum of both directions (anchor z1 and anchor z2),
  each averaged over the local anchors; gradients flow through the gathered batch, so the pmean of
  per-replica gradients is the gradient of the global loss.
  """
  chex.assert_rank(z1, 2)
  chex.assert_equal_shape([z1, z2])
  z1, z2 = _l2_normalize(z1), _l2_normalize(z2)
  all_z1, offset = _global_batch(z1, axis_name)
  all_z2, _ = _global_batch(z2, axis_name)
  local_batch, global_batch = z1.shape[0], all_z1.shape[0]
  labels = offset + jnp.arange(local_batch)
  self_mask = jax.nn.one_hot(labels, global_batch, dtype=bool)

  def direction(anchor, positives_side, same_side):
    logits_other = anchor @ positives_side.T / temperature
    logits_same = jnp.where(self_mask, -jnp.inf, anchor @ same_side.T / temperature)
    logits = jnp.concatenate([logits_other, logits_same], axis=-1)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))

  return direction(z1, all_z2, all_z1) + direction(z2, all_z1, all_z2)


def classification_loss(logits, labels):
  """Mean softmax cross-entropy and top-1 accuracy over examples with a label (label >= 0).

  Unlabelled examples (label -1, e.g. STL-10's unlabelled split) count for neither.
  """
  valid = labels >= 0
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, jnp.maximum(labels, 0)[:, None], axis=-1)[:, 0]
  correct = jnp.argmax(logits, axis=-1) == labels
  count = jnp.maximum(jnp.sum(valid), 1)
  return (jnp.sum(jnp.where(valid, nll, 0.0)) / count,
          jnp.sum(jnp.where(valid, correct, False)) / count)


def collapse_metrics(z1, z2):
  """Monitors of representational collapse on the projections of the two views.

  Returns the mean cosine similarity of positive pairs (z1_i, z2_i), of negative pairs across
  views (z1_i, z2_j), of negative pairs within a view (z1_i, z1_j and z2_i, z2_j), i != j, and the
  per-dimension std of the l2-normalised projections, averaged over dimensions and scaled by
  sqrt(dim): about 1 for spread-out outputs, 0 when collapsed. The within-view cosine sees what
  the other two cannot: with asymmetric views a network can map each view to its own constant,
  which leaves positive = negative cosine < 1 and the std of both views together high.
  """
  z1, z2 = _l2_normalize(z1), _l2_normalize(z2)
  n, dim = z1.shape
  pairs = max(n * (n - 1), 1)

  def off_diagonal_mean(cos):
    return (jnp.sum(cos) - jnp.trace(cos)) / pairs

  cos = z1 @ z2.T
  positive = jnp.mean(jnp.diagonal(cos))
  within = (off_diagonal_mean(z1 @ z1.T) + off_diagonal_mean(z2 @ z2.T)) / 2
  std = jnp.mean(jnp.std(jnp.concatenate([z1, z2]), axis=0)) * jnp.sqrt(dim)
  return {
      "positive_cosine": positive, "negative_cosine": off_diagonal_mean(cos),
      "within_view_cosine": within, "projection_std": std
  }
