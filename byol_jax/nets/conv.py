"""The convolution of every conv layer: matmuls where XLA:CPU's conv is slow.

XLA's CPU convolution is very slow for small outputs with many channels, while
the same product as strided patches times the kernel (im2col) is one fast
matmul; a 1x1 conv is a plain matmul. Hence, on the CPU backend only: 1x1
kernels are matmuls, larger ones with outputs of at most 2x2 are im2col, the
rest stay lax.conv (as does every conv on GPU/TPU). The math and parameters are
the same either way; experiments/results/conv.md and train_step.md have the
timings behind the rule.
"""
import jax
from jax import lax
import jax.numpy as jnp

# NHWC inputs, HWIO kernels (hk.Conv2D's layout).
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
# Above this output height/width, XLA:CPU convolves kernels > 1x1 fast enough.
_MAX_IM2COL_OUTPUT = 2


def conv2d(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
  """SAME-padded conv of x [N, H, W, Cin] with w [kh, kw, Cin, Cout]."""
  if use_matmul(x.shape, w.shape, stride):
    return matmul_conv2d(x, w, stride)
  return lax_conv2d(x, w, stride)


def use_matmul(x_shape, w_shape, stride: int) -> bool:
  """Whether `conv2d` lowers to matmuls: the rule of the module docstring."""
  if jax.default_backend() != "cpu":
    return False
  if w_shape[:2] == (1, 1):
    return True
  out_h, out_w = (-(-size // stride) for size in x_shape[1:3])
  return max(out_h, out_w) <= _MAX_IM2COL_OUTPUT


def lax_conv2d(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
  """`conv2d` as XLA's convolution, exactly what hk.Conv2D computes."""
  return lax.conv_general_dilated(x, w, window_strides=(stride, stride), padding="SAME",
                                  dimension_numbers=_DIMENSION_NUMBERS)


def matmul_conv2d(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
  """`conv2d` as one matmul of strided patches (im2col) with the kernel.

  The padding is lax's SAME padding (the extra row/column of an odd total at
  the end), and the patch channels are ordered (kh, kw, Cin) like the kernel.
  """
  kh, kw = w.shape[:2]
  pads = lax.padtype_to_pads(x.shape[1:3], (kh, kw), (stride, stride), "SAME")
  if any(lo or hi for lo, hi in pads):
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  out_h = (x.shape[1] - kh) // stride + 1
  out_w = (x.shape[2] - kw) // stride + 1
  patches = [
      x[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride]
      for i in range(kh)
      for j in range(kw)
  ]
  patches = patches[0] if len(patches) == 1 else jnp.concatenate(patches, -1)
  return jnp.dot(patches, w.reshape(-1, w.shape[-1]))
