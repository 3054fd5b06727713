"""Tests for byol_jax.evaluation: linear probe and kNN on synthetic features."""
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from byol_jax import config as config_lib
from byol_jax.data import sources
from byol_jax.evaluation import knn
from byol_jax.evaluation import linear
from byol_jax.evaluation import protocol

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
        "image": np.concatenate([image, np.full((pad, 4, 4, 3), 255, np.uint8)]),
        # Junk rows carry wrong labels, so counting them would change results.
        "label": np.concatenate([label, np.full((pad,), 3, np.int32)]),
        "mask": np.arange(len(label) + pad) < len(label),
    }


def _evaluate(train, test, *, padding=0, epochs=5, embed=_embed):
  """Standardised features: _embed's offset of 1000 would swamp any lr on raw features."""
  train_batches = itertools.cycle(list(_batches(*train, padding=padding)))
  return linear.linear_evaluation(embed, train_batches, lambda: _batches(*test, padding=padding),
                                  num_classes=_CLASSES, epochs=epochs,
                                  steps_per_epoch=640 // _BATCH, learning_rate=0.4,
                                  standardize_features=True)


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
  results = linear.linear_evaluation(_embed, itertools.cycle(list(_batches(images, labels))),
                                     lambda: _batches(images, labels), num_classes=3, epochs=1,
                                     steps_per_epoch=2, learning_rate=0.1)
  assert set(results) == {"top1", "train_top1"}


def test_standardized_features_make_the_result_independent_of_feature_scale():
  train, test = _images(640, seed=1), _images(300, seed=2)
  scaled = jax.jit(lambda images: 1e-3 * (_embed(images) - 990.))
  assert _evaluate(train, test,
                   epochs=2) == pytest.approx(_evaluate(train, test, epochs=2, embed=scaled),
                                              abs=1e-6)


def _official_linear_classifier(features, labels, *, steps, lr, num_classes, seed=0):
  """The official protocol written out: raw features, hk.Linear's init, SGD + Nesterov 0.9 on a
  cosine lr, no weight decay; one full batch per step."""
  dim = features.shape[1]
  w = jax.random.truncated_normal(jax.random.PRNGKey(seed), -2.0, 2.0, (dim, num_classes))
  params = {"w": np.asarray(w) / np.sqrt(dim), "b": np.zeros(num_classes, np.float32)}
  trace = jax.tree.map(np.zeros_like, params)

  def loss(p):
    log_probs = jax.nn.log_softmax(features @ p["w"] + p["b"])
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))

  for k in range(steps):
    grads = jax.grad(loss)(params)
    trace = jax.tree.map(lambda g, t: g + 0.9 * t, grads, trace)
    step_lr = lr * 0.5 * (1 + np.cos(np.pi * k / steps))
    params = jax.tree.map(lambda p, g, t: p - step_lr * (g + 0.9 * t), params, grads, trace)
  return params


def test_linear_evaluation_default_is_the_official_protocol():
  images, labels = _images(_BATCH, seed=1)
  raw = jax.jit(lambda x: _embed(x) / 100.)  # Raw features, offset 10.
  features = np.asarray(raw(images))
  lr = linear.linear_learning_rate(0.2, _BATCH)
  assert lr == pytest.approx(0.05)
  params = _official_linear_classifier(features, labels, steps=6, lr=lr, num_classes=_CLASSES)
  batch = {"image": images, "label": labels, "mask": np.ones(_BATCH, bool)}
  results = linear.linear_evaluation(raw, itertools.repeat(batch), lambda: iter([batch]),
                                     num_classes=_CLASSES, epochs=6, steps_per_epoch=1,
                                     learning_rate=lr)
  want = np.mean(np.argmax(features @ params["w"] + params["b"], axis=1) == labels)
  assert results["top1"] == pytest.approx(want)
  # The reference is sensitive enough to tell the difference: standardising changes the answer.
  standardized = linear.linear_evaluation(raw, itertools.repeat(batch), lambda: iter([batch]),
                                          num_classes=_CLASSES, epochs=6, steps_per_epoch=1,
                                          learning_rate=lr, standardize_features=True)
  assert standardized["top1"] != pytest.approx(want)


def test_extract_features_returns_only_unmasked_rows():
  images, labels = _images(100, seed=4)
  features, got_labels = linear.extract_features(_embed, _batches(images, labels, padding=5))
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


@pytest.mark.parametrize("k,temperature,chunk_size", [(20, 0.07, 32), (5, 0.5, 256), (1, 0.07, 7),
                                                      (1000, 0.1, 32)])
def test_knn_matches_naive_loop(k, temperature, chunk_size):
  rng = np.random.default_rng(5)
  centers = rng.normal(size=(6, 16))
  train_y = rng.integers(0, 6, 300)
  test_y = rng.integers(0, 6, 70)
  train_x = centers[train_y] + rng.normal(size=(300, 16))
  test_x = centers[test_y] + rng.normal(size=(70, 16))
  want = _naive_knn(train_x, train_y, test_x, min(k, 300), temperature, 6)
  got = knn.knn_predict(train_x, train_y, test_x, k=k, temperature=temperature, num_classes=6,
                        chunk_size=chunk_size)
  np.testing.assert_array_equal(got, want)
  accuracy = knn.knn_top1(train_x, train_y, test_x, test_y, k=k, temperature=temperature,
                          num_classes=6, chunk_size=chunk_size)
  assert accuracy == np.mean(want == test_y)
  assert accuracy > 0.5  # Well above the 1/6 of chance on these blobs.


def test_knn_small_temperature_stays_finite():
  rng = np.random.default_rng(6)
  train_x, train_y = rng.normal(size=(50, 8)), rng.integers(0, 3, 50)
  got = knn.knn_predict(train_x, train_y, train_x, k=5, temperature=1e-3, num_classes=3)
  np.testing.assert_array_equal(got, train_y)  # Each point is its own nearest.


def test_evaluating_an_export_names_a_missing_encoder(tmp_path):
  config = ml_collections.ConfigDict({"encoder_dir": None})
  with pytest.raises(config_lib.ConfigError, match="config.encoder_dir is not set"):
    protocol.evaluate_exported(config)
  config.encoder_dir = str(tmp_path)
  with pytest.raises(config_lib.ConfigError, match="holds no exported encoder"):
    protocol.evaluate_exported(config)


def _pixels(images):
  return images.reshape(images.shape[0], -1).astype(np.float32)


def test_knn_monitor_classifies_its_query_split_against_its_bank(shapes10_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  config = config_lib.from_file("configs/byol.py:tiny")
  config.data_dir = shapes10_dir
  config.knn_monitor.update(bank_split="train[:300]", query_split="validation[:200]")
  protocol.check_splits(config, sources.dataset_info("shapes10", shapes10_dir))
  # The tiny preset's eval views are the whole 32 px image, so the pipeline's raw pixels are the
  # stored images.
  builder = tfds.builder("shapes10", data_dir=shapes10_dir)
  (bank, bank_labels), (queries, query_labels) = [
      tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
      for split in ("train[:300]", "validation[:200]")
  ]
  expected = knn.knn_top1(_pixels(bank), bank_labels, _pixels(queries), query_labels,
                          k=config.eval.knn_k, temperature=config.eval.knn_temperature,
                          num_classes=10)
  assert protocol.monitor_knn(config, _pixels, num_classes=10) == pytest.approx(float(expected))


@pytest.mark.parametrize("key", ["knn_monitor.query_split", "eval.test_split"])
def test_a_split_that_does_not_exist_is_named_before_training(shapes10_dir, key):
  config = config_lib.from_file("configs/byol.py:tiny")
  config.data_dir = shapes10_dir
  group, name = key.split(".")
  config[group][name] = "valid"
  with pytest.raises(config_lib.ConfigError, match=f"config.{key}: split 'valid' of 'shapes10'"):
    protocol.check_splits(config, sources.dataset_info("shapes10", shapes10_dir))


def test_evaluation_reads_the_splits_it_is_given(shapes10_dir):
  config = config_lib.from_file("configs/byol.py:tiny")
  config.eval.update(train_split="train[:200]", test_split="validation[:100]", linear_epochs=1)
  results = protocol.evaluate_features(_pixels, dataset="shapes10", data_dir=shapes10_dir,
                                       image_size=32, eval_config=config.eval)
  assert (results["num_train_examples"], results["num_test_examples"]) == (200, 100)
