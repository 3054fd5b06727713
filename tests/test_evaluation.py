"""Tests for byol_jax.evaluation: linear probe and kNN on synthetic features."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byol_jax.evaluation import knn
from byol_jax.evaluation import linear

_CLASSES = 10
_BATCH = 64


def _images(num, seed, num_classes=_CLASSES):
  """uint8 4x4 images: a fixed random prototype per class plus pixel noise."""
  prototypes = np.random.default_rng(0).uniform(0, 255, (num_classes, 4, 4, 3))
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, num).astype(np.int32)
  noisy = prototypes[labels] + rng.normal(0, 40, (num, 4, 4, 3))
  return np.clip(noisy, 0, 255).astype(np.uint8), labels


@jax.jit
def _embed(images):
  """A fixed random encoder with a large offset and scale, like raw features."""
  projection = jax.random.normal(jax.random.PRNGKey(0), (48, 64))
  x = images.reshape(images.shape[0], -1).astype(jnp.float32) / 255 - 0.5
  return 1000. + 50. * jnp.tanh(x @ projection)


def _batches(images, labels, *, padding=0):
  """Batches of `_BATCH` (+ `padding`) rows; masked junk fills the rest."""
  for start in range(0, len(labels), _BATCH):
    image, label = images[start:start + _BATCH], labels[start:start + _BATCH]
    pad = _BATCH - len(label) + padding
    yield {
        "image": np.concatenate(
            [image, np.full((pad, 4, 4, 3), 255, np.uint8)]),
        # Junk rows carry wrong labels, so counting them would change results.
        "label": np.concatenate([label, np.full((pad,), 3, np.int32)]),
        "mask": np.arange(len(label) + pad) < len(label),
    }


def _evaluate(train, test, *, padding=0, epochs=5):
  train_batches = itertools.cycle(list(_batches(*train, padding=padding)))
  return linear.linear_evaluation(
      _embed, train_batches, lambda: _batches(*test, padding=padding),
      num_classes=_CLASSES, epochs=epochs, steps_per_epoch=640 // _BATCH)


def test_linear_evaluation_learns_separable_classes():
  results = _evaluate(_images(640, seed=1), _images(300, seed=2))
  assert set(results) == {"top1", "top5", "train_top1"}
  assert results["top1"] > 0.9
  assert results["top5"] > 0.98
  assert results["train_top1"] > 0.9


def test_linear_evaluation_with_random_labels_stays_near_chance():
  images, _ = _images(300, seed=2)
  random_labels = np.random.default_rng(3).integers(0, _CLASSES, 300)
  results = _evaluate(_images(640, seed=1), (images, random_labels))
  assert results["top1"] < 0.25
  assert results["top5"] < 0.75


def test_linear_evaluation_ignores_masked_examples():
  train, test = _images(640, seed=1), _images(300, seed=2)
  plain = _evaluate(train, test, epochs=2)
  padded = _evaluate(train, test, padding=16, epochs=2)
  assert plain == pytest.approx(padded, abs=1e-9)


def test_linear_evaluation_without_top5_for_few_classes():
  images, labels = _images(128, seed=1, num_classes=3)
  results = linear.linear_evaluation(
      _embed, itertools.cycle(list(_batches(images, labels))),
      lambda: _batches(images, labels), num_classes=3, epochs=1,
      steps_per_epoch=2)
  assert set(results) == {"top1", "train_top1"}


def test_extract_features_returns_only_unmasked_rows():
  images, labels = _images(100, seed=4)
  features, got_labels = linear.extract_features(
      _embed, _batches(images, labels, padding=5))
  assert features.shape == (100, 64) and features.dtype == np.float32
  np.testing.assert_array_equal(got_labels, labels)
  np.testing.assert_allclose(features, _embed(images), rtol=1e-6)


def _naive_knn(train_x, train_y, test_x, k, temperature, num_classes):
  """The definition, one query at a time, in float64."""
  train_x = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
  predictions = []
  for query in test_x:
    sims = train_x @ (query / np.linalg.norm(query))
    votes = np.zeros(num_classes)
    for j in np.argsort(-sims, kind="stable")[:k]:
      votes[train_y[j]] += np.exp(sims[j] / temperature)
    predictions.append(np.argmax(votes))
  return np.array(predictions)


@pytest.mark.parametrize("k,temperature,chunk_size", [
    (20, 0.07, 32), (5, 0.5, 256), (1, 0.07, 7), (1000, 0.1, 32)])
def test_knn_matches_naive_loop(k, temperature, chunk_size):
  rng = np.random.default_rng(5)
  centres = rng.normal(size=(6, 16))
  train_y = rng.integers(0, 6, 300)
  test_y = rng.integers(0, 6, 70)
  train_x = centres[train_y] + rng.normal(size=(300, 16))
  test_x = centres[test_y] + rng.normal(size=(70, 16))
  want = _naive_knn(train_x, train_y, test_x, min(k, 300), temperature, 6)
  got = knn.knn_predict(train_x, train_y, test_x, k=k, temperature=temperature,
                        num_classes=6, chunk_size=chunk_size)
  np.testing.assert_array_equal(got, want)
  accuracy = knn.knn_top1(train_x, train_y, test_x, test_y, k=k,
                          temperature=temperature, num_classes=6,
                          chunk_size=chunk_size)
  assert accuracy == np.mean(want == test_y)
  assert accuracy > 0.5  # Well above the 1/6 of chance on these blobs.


def test_knn_small_temperature_stays_finite():
  rng = np.random.default_rng(6)
  train_x, train_y = rng.normal(size=(50, 8)), rng.integers(0, 3, 50)
  got = knn.knn_predict(train_x, train_y, train_x, k=5, temperature=1e-3,
                        num_classes=3)
  np.testing.assert_array_equal(got, train_y)  # Each point is its own nearest.
