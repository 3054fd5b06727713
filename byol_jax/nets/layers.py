"""Conv and linear layers (optionally weight-standardized) and the norms.

Mixed precision: parameters are always float32; convs and linears compute in
the dtype of their input, and every norm in float32 (bf16 statistics are too
coarse), returning its input's dtype. Float32 inputs are thus unaffected, and
bf16 inputs make a network run in bf16 on float32 master weights.

Every normalization that has parameters lives in a Haiku module called exactly
`name` with parameters "scale" and "offset", so a layer has the same module
path whatever the kind; the modified init (bn_stats) relies on this to map
BatchNorm statistics onto the "affine" parameters of the same layer.
"""
from typing import Callable

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from byol_jax import cpu_speed

# User-facing choices. "affine" is also accepted by `make_norm`: it is the
# network of the paper's modified init (BN removed, its scale/offset kept);
# "affine_bn_backward" is that network with BN's backward pass (an ablation).
NORMS = ("bn", "ln", "gn", "none", "bn_stopgrad")
_KINDS = NORMS + ("affine", "affine_bn_backward")

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


class _Layer(hk.Module):
  """Float32 parameters "w" and "b", used in the dtype of the layer's input.

  So a caller gets bf16 compute by casting its inputs, while the parameters
  (and the optimizer state built on them) stay float32.
  """

  _standardize = False  # Weight-standardize "w" (in float32) at every call.

  def __init__(self, with_bias, w_init, b_init, name):
    super().__init__(name=name)
    self._with_bias = with_bias
    self._w_init = w_init
    self._b_init = b_init or jnp.zeros

  def _weight(self, shape, dtype) -> jax.Array:
    w_init = self._w_init
    if w_init is None:  # The default of hk.Conv2D and hk.Linear.
      stddev = 1. / np.sqrt(np.prod(shape[:-1]))
      w_init = hk.initializers.TruncatedNormal(stddev=stddev)
    w = hk.get_parameter("w", shape, jnp.float32, init=w_init)
    if self._standardize:
      w = standardize_weight(w)
    return w.astype(dtype)

  def _add_bias(self, out: jax.Array) -> jax.Array:
    if not self._with_bias:
      return out
    b = hk.get_parameter("b", (out.shape[-1],), jnp.float32, init=self._b_init)
    return out + b.astype(out.dtype)


class Conv2D(_Layer):
  """SAME-padded NHWC conv with hk.Conv2D's parameters, init and default name.

  Parameters: "w" [k, k, Cin, Cout] and, with_bias, "b" [Cout]. Square
  kernels and strides only. Runs `cpu_speed.conv2d`: matmuls where XLA:CPU's conv is slow.
  """

  def __init__(self, output_channels, kernel_shape, stride=1, with_bias=True, w_init=None,
               b_init=None, name=None):
    super().__init__(with_bias, w_init, b_init, name)
    self._output_channels = output_channels
    self._kernel_size = kernel_shape
    self._stride = stride

  def __call__(self, x: jax.Array) -> jax.Array:
    k = self._kernel_size
    w = self._weight((k, k, x.shape[-1], self._output_channels), x.dtype)
    return self._add_bias(cpu_speed.conv2d(x, w, self._stride))


class WSConv2D(Conv2D):
  """Conv2D whose kernel is weight-standardized at every call (stored raw)."""

  _standardize = True


class Linear(_Layer):
  """hk.Linear's computation, parameters ("w" [in, out], "b"), init and name."""

  def __init__(self, output_size, with_bias=True, w_init=None, b_init=None, name=None):
    super().__init__(with_bias, w_init, b_init, name)
    self._output_size = output_size

  def __call__(self, x: jax.Array) -> jax.Array:
    w = self._weight((x.shape[-1], self._output_size), x.dtype)
    return self._add_bias(jnp.dot(x, w))


class WSLinear(Linear):
  """Linear whose weight is weight-standardized at every call (stored raw)."""

  _standardize = True


class _Affine(hk.Module):
  """Per-channel scale and offset, no statistics: BN minus its normalization.

  With `bn_backward` the forward pass is unchanged and the gradient to its input is BN's: projected
  through the batch statistics (`_bn_input_gradient`), as if the scale and offset had been
  computed from this batch.
  """

  def __init__(self, zero_init_scale: bool, name: str, bn_backward=False, cross_replica_axis=None,
               eps=1e-5):
    super().__init__(name=name)
    self._scale_init = jnp.zeros if zero_init_scale else jnp.ones
    self._input = _bn_input_gradient(cross_replica_axis, eps) if bn_backward else (lambda x: x)

  def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
    del is_training  # No statistics, so train and eval are the same.
    shape = (x.shape[-1],)
    scale = hk.get_parameter("scale", shape, jnp.float32, self._scale_init)
    offset = hk.get_parameter("offset", shape, jnp.float32, jnp.zeros)
    return self._input(x) * scale + offset


def _bn_input_gradient(axis_name, eps):
  """The identity, whose backward pass removes from the gradient g what BN's backward removes:
  g - mean(g) - x_hat mean(g x_hat), with x_hat the input normalized by its batch statistics (over
  the replicas of `axis_name`). Times BN's scale gamma / sqrt(var + eps) this is BN's gradient to
  its input, so an affine layer whose scale is that reproduces BN's backward on this batch."""

  @jax.custom_vjp
  def identity(x):
    return x

  def mean(t):
    m = jnp.mean(t, tuple(range(t.ndim - 1)))
    return jax.lax.pmean(m, axis_name) if axis_name else m

  def backward(x, g):
    mu = mean(x)
    x_hat = (x - mu) * jax.lax.rsqrt(mean(jnp.square(x)) - jnp.square(mu) + eps)
    return (g - mean(g) - x_hat * mean(g * x_hat),)

  identity.defvjp(lambda x: (x, x), backward)
  return identity


class _StopGradientBatchNorm(hk.Module):
  """BN's forward pass with its batch statistics held constant in the backward pass.

  An ablation: it keeps BN's renormalization of every batch and removes the gradient through the
  statistics, the path by which BN lets one example's gradient depend on the others'.
  Moving averages for evaluation, as hk.BatchNorm.
  """

  def __init__(self, scale_init, eps: float, decay_rate: float, cross_replica_axis, name: str):
    super().__init__(name=name)
    self._scale_init, self._eps, self._axis = scale_init, eps, cross_replica_axis
    self._mean_ema = hk.ExponentialMovingAverage(decay_rate, name="mean_ema")
    self._var_ema = hk.ExponentialMovingAverage(decay_rate, name="var_ema")

  def __call__(self, x: jax.Array, is_training: bool) -> jax.Array:
    shape = (x.shape[-1],)
    scale = hk.get_parameter("scale", shape, jnp.float32, self._scale_init)
    offset = hk.get_parameter("offset", shape, jnp.float32, jnp.zeros)
    if is_training:
      axes = tuple(range(x.ndim - 1))
      mean, mean_of_squares = jnp.mean(x, axes), jnp.mean(jnp.square(x), axes)
      if self._axis:
        mean, mean_of_squares = jax.lax.pmean((mean, mean_of_squares), self._axis)
      mean = jax.lax.stop_gradient(mean)
      var = jax.lax.stop_gradient(mean_of_squares - jnp.square(mean))
      self._mean_ema(mean)
      self._var_ema(var)
    else:
      mean, var = self._mean_ema.average, self._var_ema.average
    return (x - mean) * (jax.lax.rsqrt(var + self._eps) * scale) + offset


class _GroupNorm(hk.Module):
  """hk.GroupNorm's math and parameters, with reductions XLA:CPU runs fast.

  The mean and the (two-pass) variance of each sample's group are sums over the spatial axes per
  channel, then over the group's channels: XLA:CPU runs these reductions several times faster
  than those of hk.GroupNorm's reshape to (..., groups, C / groups).
  """

  def __init__(self, groups: int, eps: float, scale_init, name: str):
    super().__init__(name=name)
    self._groups, self._eps, self._scale_init = groups, eps, scale_init

  def __call__(self, x: jax.Array) -> jax.Array:
    batch, channels = x.shape[0], x.shape[-1]
    per_group = channels // self._groups
    spatial = tuple(range(1, x.ndim - 1))
    count = np.prod(x.shape[1:-1], dtype=int) * per_group
    broadcast_shape = (batch,) + (1,) * len(spatial) + (channels,)

    def group_mean(t):
      sums = jnp.sum(t, spatial).reshape(batch, self._groups, per_group).sum(-1)
      return jnp.repeat(sums / count, per_group, axis=1).reshape(broadcast_shape)

    scale = hk.get_parameter("scale", (channels,), jnp.float32, self._scale_init)
    offset = hk.get_parameter("offset", (channels,), jnp.float32, jnp.zeros)
    centered = x - group_mean(x)
    inverse_std = jax.lax.rsqrt(group_mean(jnp.square(centered)) + self._eps)
    return centered * (inverse_std * scale) + offset


def _in_float32(norm: NormFn) -> NormFn:
  """`norm` run on a float32 copy of its input, cast back to the input dtype."""

  def float32_norm(x: jax.Array, is_training: bool) -> jax.Array:
    return norm(x.astype(jnp.float32), is_training).astype(x.dtype)

  return float32_norm


def _identity(x: jax.Array, is_training: bool) -> jax.Array:
  del is_training
  return x


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def make_norm(kind: str, *, name: str, gn_groups: int = 16, bn_cross_replica_axis=None,
              bn_decay_rate: float = 0.9, eps: float = 1e-5,
              zero_init_scale: bool = False) -> NormFn:
  """Returns `norm(x, is_training)` of the given kind; call inside hk.transform.

  Kinds: "bn" (hk.BatchNorm; batch statistics in training, moving averages in
  eval, optionally across replicas), "ln" (GroupNorm with one group: over
  (H, W, C) of a feature map, over C of a vector), "gn" (`gn_groups` groups of
  channels), "none" (identity, no parameters), "bn_stopgrad" (bn with no
  gradient through its batch statistics), "affine" (trainable scale and
  offset of shape (C,), no statistics) and "affine_bn_backward" (affine whose
  input gradient is BN's through the batch statistics). Inputs are channels-last. Each
  kind computes in float32 with float32 parameters and state, and returns the
  input dtype.

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
  if kind in ("affine", "affine_bn_backward"):
    return _in_float32(
        _Affine(zero_init_scale, name=name, bn_backward=kind == "affine_bn_backward",
                cross_replica_axis=bn_cross_replica_axis, eps=eps))
  if kind == "bn":
    return _in_float32(
        hk.BatchNorm(create_scale=True, create_offset=True, decay_rate=bn_decay_rate, eps=eps,
                     scale_init=scale_init, cross_replica_axis=bn_cross_replica_axis, name=name))
  if kind == "bn_stopgrad":
    return _in_float32(
        _StopGradientBatchNorm(scale_init, eps, bn_decay_rate, bn_cross_replica_axis, name=name))

  groups = 1 if kind == "ln" else gn_groups
  if groups < 1:
    raise ValueError(f"Layer {name!r}: gn_groups must be >= 1, got {groups}.")
  module = _GroupNorm(groups, eps=eps, scale_init=scale_init, name=name)

  def group_norm(x: jax.Array, is_training: bool) -> jax.Array:
    del is_training  # Per-sample statistics: train and eval are the same.
    channels = x.shape[-1]
    if channels % groups:
      raise ValueError(f"Layer {module.module_name!r}: gn_groups={groups} does not divide "
                       f"its {channels} channels; valid group counts are "
                       f"{', '.join(map(str, _divisors(channels)))}.")
    return module(x)

  return _in_float32(group_norm)
