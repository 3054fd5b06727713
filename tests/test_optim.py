"""LARS, its masks and the schedules against hand computations."""
import jax.numpy as jnp
import numpy as np
import pytest

from byol_jax import optim


def _params():
  return {
      "encoder/~/conv": {"w": jnp.array([[3.0, 4.0]])},
      "encoder/~/norm": {"scale": jnp.array([1.0, 2.0]), "offset": jnp.array([0.5, 0.5])},
      "projector/~/linear": {"w": jnp.array([[1.0], [0.0]]), "b": jnp.array([2.0])},
  }


def test_mask_excludes_biases_and_norm_parameters():
  mask = optim.decay_and_adapt_mask(_params())
  assert mask == {"encoder/~/conv": {"w": True},
                  "encoder/~/norm": {"scale": False, "offset": False},
                  "projector/~/linear": {"w": True, "b": False}}


def test_lars_matches_its_formula():
  params = _params()
  grads = {"encoder/~/conv": {"w": jnp.array([[0.3, -0.4]])},
           "encoder/~/norm": {"scale": jnp.array([0.1, 0.2]), "offset": jnp.array([-0.1, 0.3])},
           "projector/~/linear": {"w": jnp.array([[0.5], [0.5]]), "b": jnp.array([1.0])}}
  lr, wd, eta, momentum = 0.5, 0.1, 1e-3, 0.9
  tx = optim.lars(lr, weight_decay=wd, momentum=momentum, trust_coefficient=eta)
  state = tx.init(params)
  updates, state = tx.update(grads, state, params)
  for module, leaves in grads.items():
    for name, g in leaves.items():
      w = np.asarray(params[module][name])
      g = np.asarray(g)
      if name == "w":  # Decayed and trust-ratio adapted.
        g = g + wd * w
        g = eta * np.linalg.norm(w) / np.linalg.norm(g) * g
      np.testing.assert_allclose(updates[module][name], -lr * g, rtol=1e-5)
  # Second step: momentum accumulates the scaled update.
  updates2, _ = tx.update(grads, state, params)
  np.testing.assert_allclose(updates2["encoder/~/norm"]["offset"],
                             -lr * (1 + momentum) * np.asarray(grads["encoder/~/norm"]["offset"]),
                             rtol=1e-5)


def test_learning_rate_schedule_endpoints_and_warmup():
  schedule = optim.learning_rate_schedule(base_lr=0.2, batch_size=512, total_steps=100,
                                          warmup_steps=10)
  peak = 0.2 * 512 / 256
  assert float(schedule(0)) == pytest.approx(0.0)
  assert float(schedule(5)) == pytest.approx(peak / 2)
  assert float(schedule(10)) == pytest.approx(peak)
  assert float(schedule(55)) == pytest.approx(peak / 2, rel=1e-5)
  assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)


def test_learning_rate_schedule_without_warmup_starts_at_peak():
  schedule = optim.learning_rate_schedule(base_lr=0.3, batch_size=256, total_steps=10,
                                          warmup_steps=0)
  assert float(schedule(0)) == pytest.approx(0.3)


def test_tau_schedule():
  tau = optim.tau_schedule(tau_base=0.996, total_steps=100)
  assert float(tau(0)) == pytest.approx(0.996)
  assert float(tau(50)) == pytest.approx(1 - 0.004 / 2)
  assert float(tau(100)) == pytest.approx(1.0)
  k = 30
  expected = 1 - (1 - 0.996) * (np.cos(np.pi * k / 100) + 1) / 2
  assert float(tau(k)) == pytest.approx(expected)
