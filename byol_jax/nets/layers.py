"""Weight-standardized layers and the normalization factory.

Every normalization that has parameters lives in a Haiku module called exactly
`name` with parameters "scale" and "offset", so a layer has the same module
path whatever the kind; the modified init (bn_stats) relies on this to map
BatchNorm statistics onto the "affine" parameters of the same layer.
"""
from typing import Callable

import haiku as hk
import jax
import jax.numpy as jnp

# User-facing choices. "affine" is also accepted by `make_norm`: it is the
# network of the paper's modified init (BN removed, its scale/offset kept).
NORMS = ("bn", "ln", "gn", "none")
_KINDS = NORMS + ("affine",)

NormFn = Callable[[jax.Array, bool], jax.Array]


def standardize_weight(w: jax.Array, eps: float = 1e-4) -> jax.Array:
  """Standardizes `w` per output unit (last axis) over its fan-in (the rest).

  (w - mean) / sqrt(var + eps); being differentiable, gradients reach raw w.

  Args:
    w: a kernel, [..., out].
    eps: added to the variance, as in the paper (1e-4).

  Returns:
    The standardized kernel, same shape as `w`.
  """
  fan_in_axes = tuple(range(w.ndim - 1))
  mean = jnp.mean(w, axis=fan_in_axes, keepdims=True)
  var = jnp.var(w, axis=fan_in_axes, keepdims=True)
  return (w - mean) * jax.lax.rsqrt(var + eps)


def _standardize_own_w(module: hk.Module):
  """A custom getter that standardizes `module`'s "w" and nothing else."""

  def getter(next_getter, value, context):
    if context.module is module and context.name == "w":
      value = standardize_weight(value)
    return next_getter(value)

  return getter


class WSConv2D(hk.Conv2D):
  """hk.Conv2D (NHWC) whose kernel is weight-standardized at every call.

  Parameters are hk.Conv2D's ("w" [kh, kw, cin, cout], "b"), stored raw.
  """

  def __init__(self, output_channels, kernel_shape, stride=1, padding="SAME",
               with_bias=True, w_init=None, b_init=None, name=None):
    super().__init__(
        output_channels=output_channels, kernel_shape=kernel_shape,
        stride=stride, padding=padding, with_bias=with_bias, w_init=w_init,
        b_init=b_init, data_format="NHWC", name=name)

  def __call__(self, inputs: jax.Array) -> jax.Array:
    with hk.custom_getter(_standardize_own_w(self)):
      return super().__call__(inputs)


class WSLinear(hk.Linear):
  """hk.Linear whose weight ("w" [in, out]) is standardized at every call."""

  def __init__(self, output_size, with_bias=True, w_init=None, b_init=None,
               name=None):
    super().__init__(output_size=output_size, with_bias=with_bias,
                     w_init=w_init, b_init=b_init, name=name)

  def __call__(self, inputs: jax.Array) -> jax.Array:
    with hk.custom_getter(_standardize_own_w(self)):
      return super().__call__(inputs)


class _Affine(hk.Module):
  """Per-channel scale and offset, no statistics: BN minus its normalization."""

  def __init__(self, zero_init_scale: bool, name: str):
    super().__init__(name=name)
    self._scale_init = jnp.zeros if zero_init_scale else jnp.ones

  def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
    del is_training  # No statistics, so train and eval are the same.
    shape = (x.shape[-1],)
    scale = hk.get_parameter("scale", shape, x.dtype, self._scale_init)
    offset = hk.get_parameter("offset", shape, x.dtype, jnp.zeros)
    return x * scale + offset


def _identity(x: jax.Array, is_training: bool) -> jax.Array:
  del is_training
  return x


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def make_norm(kind: str, *, name: str, gn_groups: int = 16,
              bn_cross_replica_axis=None, bn_decay_rate: float = 0.9,
              eps: float = 1e-5, zero_init_scale: bool = False) -> NormFn:
  """Returns `norm(x, is_training)` of the given kind; call inside hk.transform.

  Kinds: "bn" (hk.BatchNorm; batch statistics in training, moving averages in
  eval, optionally across replicas), "ln" (GroupNorm with one group: over
  (H, W, C) of a feature map, over C of a vector), "gn" (`gn_groups` groups of
  channels), "none" (identity, no parameters) and "affine" (trainable scale
  and offset of shape (C,), no statistics). Inputs are channels-last.

  Args:
    kind: one of NORMS or "affine".
    name: the module name (identical for every kind).
    gn_groups: number of groups for "gn"; must divide the channel count.
    bn_cross_replica_axis: mapped axis name(s) BN averages its statistics over.
    bn_decay_rate: decay of BN's moving averages.
    eps: added to the variance by bn, ln and gn.
    zero_init_scale: initialise the scale to 0 (last norm of residual blocks).

  Raises:
    ValueError: for an unknown kind, or gn_groups < 1; the returned function
      raises it for "gn" when gn_groups does not divide the channels.
  """
  if kind not in _KINDS:
    raise ValueError(f"Layer {name!r}: unknown norm {kind!r}; valid choices "
                     f"are {', '.join(map(repr, _KINDS))}.")
  scale_init = jnp.zeros if zero_init_scale else jnp.ones
  if kind == "none":
    return _identity
  if kind == "affine":
    return _Affine(zero_init_scale, name=name)
  if kind == "bn":
    return hk.BatchNorm(
        create_scale=True, create_offset=True, decay_rate=bn_decay_rate,
        eps=eps, scale_init=scale_init,
        cross_replica_axis=bn_cross_replica_axis, name=name)

  groups = 1 if kind == "ln" else gn_groups
  if groups < 1:
    raise ValueError(f"Layer {name!r}: gn_groups must be >= 1, got {groups}.")
  module = hk.GroupNorm(groups, eps=eps, scale_init=scale_init, name=name)

  def group_norm(x: jax.Array, is_training: bool) -> jax.Array:
    del is_training  # Per-sample statistics: train and eval are the same.
    channels = x.shape[-1]
    if channels % groups:
      raise ValueError(
          f"Layer {module.module_name!r}: gn_groups={groups} does not divide "
          f"its {channels} channels; valid group counts are "
          f"{', '.join(map(str, _divisors(channels)))}.")
    return module(x)

  return group_norm
