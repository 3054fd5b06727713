"""LARS, its masks and the schedules against hand computations."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
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
  assert mask == {
      "encoder/~/conv": {"w": True}, "encoder/~/norm": {"scale": False, "offset": False},
      "projector/~/linear": {"w": True, "b": False}
  }


def _official_lars_updates(params, grads_per_step, lr_per_step, wd, eta, momentum):
  """The official BYOL update order, by hand: decay, trust ratio, momentum trace, then x -lr."""
  zeros = lambda leaves: {n: np.zeros_like(np.asarray(v)) for n, v in leaves.items()}
  mu = {m: zeros(leaves) for m, leaves in params.items()}
  all_updates = []
  for grads, lr in zip(grads_per_step, lr_per_step):
    updates = {}
    for module, leaves in grads.items():
      updates[module] = {}
      for name, g in leaves.items():
        w, g = np.asarray(params[module][name]), np.asarray(g)
        if name == "w":  # Decayed and trust-ratio adapted; biases and norms are not.
          g = g + wd * w
          g = eta * np.linalg.norm(w) / np.linalg.norm(g) * g
        mu[module][name] = momentum * mu[module][name] + g
        updates[module][name] = -lr * mu[module][name]
    all_updates.append(updates)
  return all_updates


def test_lars_matches_the_official_update_order_over_a_warmup():
  params = _params()
  rng = np.random.default_rng(0)
  grads_per_step = [
      jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
      for _ in range(6)
  ]
  wd, eta, momentum = 0.1, 1e-3, 0.9
  schedule = optim.learning_rate_schedule(base_lr=0.4, batch_size=256, total_steps=12,
                                          warmup_steps=4)
  tx = optim.lars(schedule, weight_decay=wd, momentum=momentum, trust_coefficient=eta)
  state = tx.init(params)
  expected = _official_lars_updates(params, grads_per_step, [float(schedule(k)) for k in range(6)],
                                    wd, eta, momentum)
  for step, grads in enumerate(grads_per_step):
    updates, state = tx.update(grads, state, params)
    jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9),
                 updates, expected[step])


def test_lars_can_adapt_biases_and_norms_without_decaying_them():
  params = _params()
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
  tx = optim.lars(lambda step: 1.0, weight_decay=0.1, trust_coefficient=1e-3,
                  adapt_biases_and_norms=True)
  updates, _ = tx.update(grads, tx.init(params), params)
  norm = "encoder/~/norm"
  for name in ("scale", "offset"):
    w, g = params[norm][name], grads[norm][name]
    ratio = 1e-3 * jnp.linalg.norm(w) / jnp.linalg.norm(g) if jnp.linalg.norm(w) > 0 else 1.0
    np.testing.assert_allclose(updates[norm][name], -ratio * g, rtol=1e-5)  # No decay in g.
  official, _ = optim.lars(lambda step: 1.0, weight_decay=0.1).update(grads, tx.init(params),
                                                                      params)
  np.testing.assert_allclose(official[norm]["scale"], -grads[norm]["scale"])


def test_lars_differs_from_lr_before_momentum_during_warmup():
  """optax.lars scales by the lr before the trace; with a rising lr its steps are smaller."""
  params = _params()
  grads = jax.tree.map(jnp.ones_like, params)
  schedule = optim.learning_rate_schedule(base_lr=0.4, batch_size=256, total_steps=20,
                                          warmup_steps=10)
  ours = optim.lars(schedule, weight_decay=0.0)
  before = optax.lars(schedule, weight_decay=0.0, weight_decay_mask=optim.decay_and_adapt_mask,
                      trust_ratio_mask=optim.decay_and_adapt_mask, momentum=0.9)
  ours_state, before_state = ours.init(params), before.init(params)
  for _ in range(3):
    ours_updates, ours_state = ours.update(grads, ours_state, params)
    before_updates, before_state = before.update(grads, before_state, params)
  # Step 2 (lr 0.08): official -0.08 (1 + 0.9 + 0.81) g; optax.lars -(0.08 + 0.9 0.04) g.
  offset = "encoder/~/norm"
  np.testing.assert_allclose(ours_updates[offset]["offset"], -0.08 * 2.71, rtol=1e-5)
  np.testing.assert_allclose(before_updates[offset]["offset"], -(0.08 + 0.9 * 0.04), rtol=1e-5)


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
