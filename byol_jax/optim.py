"""The LARS optimizer chain, its parameter masks, and the learning-rate and EMA schedules."""
import jax
import jax.numpy as jnp
import optax

# Haiku names biases "b" and the parameters of every normalization layer "scale" and "offset".
_EXCLUDED_PARAM_NAMES = ("b", "scale", "offset")


def decay_and_adapt_mask(params):
  """True for weights that get weight decay and LARS trust-ratio adaptation.

  Biases and normalization parameters are excluded from both, as in BYOL and SimCLR.
  """
  return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key not in _EXCLUDED_PARAM_NAMES,
                                          params)


def learning_rate_schedule(*, base_lr, batch_size, total_steps, warmup_steps):
  """base_lr x batch/256, linear warm-up from 0, then cosine decay to 0 at total_steps."""
  peak = base_lr * batch_size / 256
  warmup_steps = min(warmup_steps, total_steps)
  if warmup_steps == total_steps:
    return optax.linear_schedule(0.0, peak, max(warmup_steps, 1))
  return optax.warmup_cosine_decay_schedule(init_value=0.0, peak_value=peak,
                                            warmup_steps=warmup_steps, decay_steps=total_steps,
                                            end_value=0.0)


def tau_schedule(*, tau_base, total_steps):
  """The target EMA rate tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, from tau_base to 1."""

  def schedule(step):
    progress = jnp.minimum(step / total_steps, 1.0)
    return 1.0 - (1.0 - tau_base) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0

  return schedule


def lars(learning_rate, *, weight_decay, momentum=0.9, trust_coefficient=1e-3,
         adapt_biases_and_norms=False):
  """LARS as an optax chain in the official BYOL order: decay, trust ratio, momentum, lr.

  mu <- momentum mu + eta ||w|| / ||g + wd w|| (g + wd w); update = -lr_t mu, for masked weights
  (biases and normalization parameters get neither decay nor the trust ratio). The scheduled lr
  multiplies the momentum trace, not its input as in `optax.lars`: the two differ whenever the lr
  changes, e.g. throughout the warm-up. `adapt_biases_and_norms` (an ablation) gives those the
  trust ratio too, still without decay.
  """
  adapt_mask = ((lambda params: jax.tree.map(lambda _: True, params))
                if adapt_biases_and_norms else decay_and_adapt_mask)
  return optax.chain(
      optax.add_decayed_weights(weight_decay, mask=decay_and_adapt_mask),
      optax.masked(optax.scale_by_trust_ratio(trust_coefficient=trust_coefficient), adapt_mask),
      optax.trace(decay=momentum), optax.scale_by_learning_rate(learning_rate))
