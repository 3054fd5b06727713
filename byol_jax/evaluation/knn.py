"""Weighted k-nearest-neighbour classification of frozen features.

The protocol of Wu et al. (2018), also used by DINO: neighbours by cosine
similarity, each of the k nearest votes for its label with weight exp(sim / T).
It needs no training, so it is a cheap collapse check next to the linear probe.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np


def _l2_normalize(x):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _predict(queries, bank, bank_labels, *, k, temperature, num_classes):
  """Predicted labels of one chunk of queries; `bank` is already normalised."""
  sims = _l2_normalize(queries) @ bank.T
  top_sims, top_idx = jax.lax.top_k(sims, k)
  # Shifting by the best similarity rescales each query's votes by a constant,
  # which keeps the argmax and keeps exp() finite for any temperature.
  weights = jnp.exp((top_sims - top_sims[:, :1]) / temperature)
  votes = jax.nn.one_hot(bank_labels[top_idx], num_classes) * weights[..., None]
  return jnp.argmax(votes.sum(axis=1), axis=-1)


def knn_predict(train_features, train_labels, test_features, *, k=20, temperature=0.07, num_classes,
                chunk_size=256) -> np.ndarray:
  """Predicted label of each test feature, working through chunks of queries.

  Only a [chunk_size, num_train] similarity block exists at a time, so 10k
  queries against a 50k bank fit in memory.
  """
  if len(train_features) == 0 or len(test_features) == 0:
    raise ValueError(f"kNN needs examples on both sides; got {len(train_features)} train "
                     f"and {len(test_features)} test features.")
  bank = _l2_normalize(jnp.asarray(train_features, jnp.float32))
  bank_labels = jnp.asarray(train_labels, jnp.int32)
  k = min(k, bank.shape[0])
  test_features = np.asarray(test_features, np.float32)
  num_test = test_features.shape[0]
  predictions = []
  for start in range(0, num_test, chunk_size):
    chunk = test_features[start:start + chunk_size]
    # Padding the last chunk keeps a single compiled shape.
    padded = np.pad(chunk, ((0, chunk_size - chunk.shape[0]), (0, 0)))
    predictions.append(
        _predict(padded, bank, bank_labels, k=k, temperature=temperature,
                 num_classes=num_classes)[:chunk.shape[0]])
  return np.asarray(jnp.concatenate(predictions))


def knn_top1(train_features, train_labels, test_features, test_labels, *, k=20, temperature=0.07,
             num_classes, chunk_size=256) -> float:
  """Top-1 accuracy of weighted kNN on cosine similarity."""
  predictions = knn_predict(train_features, train_labels, test_features, k=k,
                            temperature=temperature, num_classes=num_classes, chunk_size=chunk_size)
  return float(np.mean(predictions == np.asarray(test_labels)))
