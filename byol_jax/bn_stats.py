"""The paper's modified init (Section 3.2): BN's initial scaling without batch statistics.

One forward pass of the network with BN in training mode, over an augmented global batch, measures
the per-channel mean mu_k and variance var_k at every BN k (encoder, projector and predictor). The
trained network has no normalization; in place of each BN it keeps a trainable scale and offset
(`affine`), set to gamma = gamma0 / sqrt(var_k + eps) and beta = -mu_k gamma, with gamma0 = 0
for the last norm of each residual block and 1 elsewhere. On that batch the affine network then
reproduces the BN network exactly; afterwards no batch statistic is ever computed.
"""
import haiku as hk
import jax
import jax.numpy as jnp

from byol_jax import model
from byol_jax import train

_EMA_SUFFIXES = ("/~/mean_ema", "/~/var_ema")


def _is_norm(module_params):
  return set(module_params) == {"scale", "offset"}


def statistics_pass_params(affine_params, bn_params):
  """The BN network's params: the affine network's weights, BN's own gamma0 scales and 0 offsets.

  `bn_params` comes from initialising the BN network, whose scales are already gamma0 (zero for the
  last norm of each residual block); every other leaf is taken from the affine network.
  """
  return {
      name: dict(bn_params[name]) if _is_norm(module) else dict(affine_params[name])
      for name, module in affine_params.items()
  }


def measure(config, params, images, devices=None):
  """Per-BN (mean, var) over the global batch: images [local devices, per-device batch, H, W, 3].

  The statistics are reduced over all replicas of all hosts by cross-replica BN, so N devices give
  the statistics of the whole batch. Returns {norm module path: (mean, var)} as host arrays.
  """
  network = model.make_network(config, bn_stats_pass=True)

  def forward(bn_params, bn_state, x):
    _, new_state = network.apply(bn_params, bn_state, None, x, is_training=True)
    return new_state

  bn_params, bn_state = train.init_network(network, jax.random.PRNGKey(0), images[0, :1])
  stats_params = statistics_pass_params(params, bn_params)
  devices = devices or jax.local_devices()
  new_state = jax.pmap(forward, axis_name=model.AXIS,
                       devices=devices)(train.replicate(stats_params, devices),
                                        train.replicate(bn_state, devices), images)
  new_state = train.unreplicate(new_state)
  statistics = {}
  for name in stats_params:
    if _is_norm(stats_params[name]):
      mean, var = (new_state[name + suffix]["average"] for suffix in _EMA_SUFFIXES)
      statistics[name] = (mean.reshape(-1), var.reshape(-1))
  return statistics, stats_params


def initialize(config, params, images, devices=None, eps=1e-5):
  """Affine params set from the BN statistics of `images` (see module docstring)."""
  statistics, stats_params = measure(config, params, images, devices)
  new_params = hk.data_structures.to_mutable_dict(params)
  for name, (mean, var) in statistics.items():
    gamma0 = jnp.reshape(stats_params[name]["scale"], -1)
    scale = gamma0 * jax.lax.rsqrt(var + eps)
    new_params[name] = {
        "scale": scale.reshape(params[name]["scale"].shape),
        "offset": (-mean * scale).reshape(params[name]["offset"].shape)
    }
  return new_params
