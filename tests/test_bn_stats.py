"""The modified init: the affine network reproduces the BN network on the statistics batch."""
import haiku as hk
import jax
import numpy as np
import pytest

from byol_jax import bn_stats
from byol_jax import nets
from byol_jax import model
from byol_jax import train
import train_helpers

BATCH = 16


@pytest.fixture(scope="module")
def setup():
  config = train_helpers.small_config(norm="none", init="bn_stats", batch_size=BATCH)
  state = train.init_state(config, jax.random.PRNGKey(0), image_shape=(16, 16, 3), num_classes=10,
                           steps_per_epoch=10)
  images = np.random.default_rng(0).normal(1.0, 2.0, (BATCH, 16, 16, 3)).astype(np.float32)
  params = bn_stats.initialize(config, state.online_params, images[None], jax.devices()[:1])
  return config, state, images, params


def _tapped(config, bn_stats_pass, norm_paths):
  """The network, also returning the output of every norm layer in `norm_paths`."""
  forward = model.network_fn(config, bn_stats_pass=bn_stats_pass)

  def tapped(images, is_training):
    taps = {}

    def interceptor(next_f, args, kwargs, context):
      out = next_f(*args, **kwargs)
      if context.method_name == "__call__" and context.module.module_name in norm_paths:
        taps[context.module.module_name] = out
      return out

    with hk.intercept_methods(interceptor):
      outputs = forward(images, is_training)
    return outputs, taps

  return hk.transform_with_state(tapped)


def test_every_norm_is_initialized(setup):
  config, state, _, params = setup
  norms = [k for k, v in params.items() if set(v) == {"scale", "offset"}]
  # ResNet-10: stem + 2 per block x 4 blocks + 4 projection shortcuts; plus the two heads.
  assert len(norms) == 1 + 8 + 4 + 2
  assert not config.zero_init_last_norm  # gamma0 = 0 is the modified init's own definition.
  for name in norms:
    if nets.is_last_block_norm(name):  # gamma0 = 0: scale and offset 0.
      np.testing.assert_array_equal(params[name]["scale"], 0.0)
      np.testing.assert_array_equal(params[name]["offset"], 0.0)
    else:  # Set from the statistics: no longer the default ones and zeros.
      assert not np.allclose(params[name]["scale"], state.online_params[name]["scale"]), name


def test_affine_network_reproduces_the_bn_network_layer_by_layer(setup):
  config, state, images, params = setup
  norm_paths = {k for k, v in params.items() if set(v) == {"scale", "offset"}}
  statistics, _ = bn_stats.measure(config, state.online_params, images[None], jax.devices()[:1])
  affine = _tapped(config, False, norm_paths)
  bn = _tapped(config, True, norm_paths)
  (affine_out, affine_taps), _ = affine.apply(params, {}, None, images, is_training=True)

  bn_params, bn_state = train.init_network(bn, jax.random.PRNGKey(0), images[:1])
  bn_params = bn_stats.statistics_pass_params(params, bn_params)

  def bn_apply(p, s, x):
    return bn.apply(p, s, None, x, is_training=True)[0]

  bn_out, bn_taps = jax.pmap(bn_apply, axis_name=model.AXIS,
                             devices=jax.devices()[:1])(*train.replicate((bn_params, bn_state),
                                                                         jax.devices()[:1]),
                                                        images[None])
  assert set(affine_taps) == set(bn_taps) == norm_paths
  for name in norm_paths:
    a, b = np.asarray(affine_taps[name]), np.asarray(bn_taps[name][0])
    np.testing.assert_allclose(a, b, atol=2e-4, rtol=1e-3, err_msg=name)
    # Per channel: mean 0 and std gamma0 (0 for the last norm of a block, 1 elsewhere), up to
    # BN's eps: std = gamma0 sqrt(var / (var + eps)).
    axes = tuple(range(a.ndim - 1))
    gamma0 = 0.0 if nets.is_last_block_norm(name) else 1.0
    var = statistics[name][1]
    np.testing.assert_allclose(a.mean(axes), 0.0, atol=2e-3, err_msg=name)
    np.testing.assert_allclose(a.std(axes), gamma0 * np.sqrt(var / (var + 1e-5)), atol=2e-3,
                               rtol=1e-3, err_msg=name)
  for key in affine_out:
    np.testing.assert_allclose(affine_out[key], bn_out[key][0], atol=2e-4, rtol=1e-3)


def test_batch_independent_after_the_init(setup):
  config, state, images, params = setup
  network = model.make_network(config)

  def embed(x):
    return network.apply(params, state.online_state, None, x, is_training=True)[0]["prediction"]

  other = np.random.default_rng(1).normal(size=images.shape).astype(np.float32)
  mixed = other.copy()
  mixed[0] = images[0]
  np.testing.assert_allclose(embed(images)[0], embed(mixed)[0], rtol=1e-5, atol=1e-5)


def test_four_devices_measure_the_statistics_of_the_whole_batch(setup):
  config, state, images, _ = setup
  one, _ = bn_stats.measure(config, state.online_params, images[None], jax.devices()[:1])
  four, _ = bn_stats.measure(config, state.online_params, images.reshape(4, 4, 16, 16, 3),
                             jax.devices()[:4])
  assert set(one) == set(four)
  for name in one:
    np.testing.assert_allclose(one[name][0], four[name][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(one[name][1], four[name][1], rtol=1e-4, atol=1e-5)
