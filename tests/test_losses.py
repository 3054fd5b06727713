"""Losses against their formulas and naive implementations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byol_jax import losses


def test_regression_loss_endpoints():
  x = jnp.array([[1.0, 2.0, -3.0]])
  np.testing.assert_allclose(losses.regression_loss(x, 5 * x), [0.0], atol=1e-6)
  np.testing.assert_allclose(losses.regression_loss(x, -x), [4.0], atol=1e-6)
  np.testing.assert_allclose(losses.regression_loss(x, jnp.array([[2.0, -1.0, 0.0]])), [2.0],
                             atol=1e-6)


def test_byol_loss_sums_both_directions():
  rng = np.random.default_rng(0)
  p1, p2, z1, z2 = (jnp.asarray(rng.normal(size=(8, 5))) for _ in range(4))
  expected = np.mean(losses.regression_loss(p1, z2)) + np.mean(losses.regression_loss(p2, z1))
  np.testing.assert_allclose(losses.byol_loss(p1, p2, z1, z2), expected, rtol=1e-6)
  assert float(losses.byol_loss(p1, p2, p2, p1)) == pytest.approx(0.0, abs=1e-5)
  assert float(losses.byol_loss(p1, p2, -p2, -p1)) == pytest.approx(8.0, abs=1e-5)


def test_byol_loss_sends_no_gradient_to_the_target():
  rng = np.random.default_rng(1)
  p1, p2, z1, z2 = (jnp.asarray(rng.normal(size=(4, 3))) for _ in range(4))
  grads = jax.grad(losses.byol_loss, argnums=(0, 2))(p1, p2, z1, z2)
  assert np.abs(grads[0]).sum() > 0
  np.testing.assert_array_equal(grads[1], 0.0)


def _naive_infonce(z1, z2, temperature):
  z1 = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
  z2 = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
  n = len(z1)
  total = 0.0
  for anchors, others in ((z1, z2), (z2, z1)):
    for i in range(n):
      positive = np.exp(anchors[i] @ others[i] / temperature)
      denominator = sum(np.exp(anchors[i] @ others[j] / temperature) for j in range(n))
      denominator += sum(np.exp(anchors[i] @ anchors[j] / temperature) for j in range(n) if j != i)
      total += -np.log(positive / denominator) / n
  return total


def test_infonce_matches_a_naive_loop():
  rng = np.random.default_rng(2)
  z1, z2 = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
  np.testing.assert_allclose(losses.infonce_loss(jnp.asarray(z1), jnp.asarray(z2), 0.5),
                             _naive_infonce(z1, z2, 0.5), rtol=1e-5)


def test_infonce_gathers_negatives_across_replicas():
  """4 replicas with a quarter each: the mean of their losses and gradients equals 1 device's."""
  rng = np.random.default_rng(3)
  z1, z2 = rng.normal(size=(8, 4)).astype(np.float32), rng.normal(size=(8, 4)).astype(np.float32)

  def per_replica(a, b):
    loss, grads = jax.value_and_grad(losses.infonce_loss, argnums=(0, 1))(a, b, 0.2, "i")
    return jax.lax.pmean(loss, "i"), grads

  loss, grads = jax.pmap(per_replica, axis_name="i")(z1.reshape(4, 2, 4), z2.reshape(4, 2, 4))
  full_loss, full_grads = jax.value_and_grad(losses.infonce_loss, argnums=(0, 1))(z1, z2, 0.2)
  np.testing.assert_allclose(loss[0], full_loss, rtol=1e-5)
  # Each replica's gradient is that of the global loss times the replica count (pmean divides).
  np.testing.assert_allclose(np.asarray(grads[0]).reshape(8, 4) / 4, full_grads[0], atol=1e-6)
  np.testing.assert_allclose(np.asarray(grads[1]).reshape(8, 4) / 4, full_grads[1], atol=1e-6)


def test_classification_loss_ignores_unlabeled_examples():
  logits = jnp.array([[2.0, 0.0], [0.0, 3.0], [5.0, 0.0]])
  loss, accuracy = losses.classification_loss(logits, jnp.array([0, 0, -1]))
  expected = -(jax.nn.log_softmax(logits[0])[0] + jax.nn.log_softmax(logits[1])[0]) / 2
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  assert float(accuracy) == pytest.approx(0.5)


def test_collapse_metrics_tell_collapse_from_spread():
  rng = np.random.default_rng(4)
  collapsed = jnp.ones((16, 8)) + 1e-4 * jnp.asarray(rng.normal(size=(16, 8)))
  m = losses.collapse_metrics(collapsed, collapsed)
  assert float(m["positive_cosine"]) > 0.999 and float(m["negative_cosine"]) > 0.999
  assert float(m["projection_std"]) < 0.01
  z = jnp.asarray(rng.normal(size=(256, 8)))
  m = losses.collapse_metrics(z, z + 0.1 * jnp.asarray(rng.normal(size=(256, 8))))
  assert float(m["positive_cosine"]) > 0.9 and abs(float(m["negative_cosine"])) < 0.1
  assert 0.8 < float(m["projection_std"]) < 1.2


def test_within_view_cosine_sees_a_constant_per_view():
  """Each view mapped to its own constant: positive = negative cosine < 1, and only the
  within-view cosine says that the projections hold nothing of the image."""
  rng = np.random.default_rng(5)
  noise = lambda: 1e-3 * jnp.asarray(rng.normal(size=(32, 8)))
  c1, c2 = jnp.eye(8)[0], jnp.eye(8)[1]
  m = losses.collapse_metrics(c1 + noise(), c2 + noise())
  assert abs(float(m["positive_cosine"]) - float(m["negative_cosine"])) < 1e-3
  assert float(m["positive_cosine"]) < 0.1 and float(m["projection_std"]) > 0.3
  assert float(m["within_view_cosine"]) > 0.999
  z = jnp.asarray(rng.normal(size=(256, 8)))
  assert abs(float(losses.collapse_metrics(z, z)["within_view_cosine"])) < 0.1


def test_losses_refuse_mismatched_shapes():
  """A [batch, dim] against a [batch, 1, dim] would broadcast into a wrong loss, silently."""
  x = jnp.ones((4, 8))
  with pytest.raises(AssertionError):
    losses.byol_loss(x, x, x[:, None], x)
  with pytest.raises(AssertionError):
    losses.infonce_loss(x, x[:2], temperature=0.1)
