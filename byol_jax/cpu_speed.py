"""Everything byol_jax does only because XLA:CPU is slow; no other module changes for a platform.

Each piece picks kernels, not math: results agree with the plain program to float32 rounding, and
GPUs and TPUs run the plain one (experiments/results/train_step.md and conv.md time both).

- Compile options. jaxlib hands every float32 convolution to YNNPACK, which runs a layer on one
  thread whenever it has fewer than 128 input or output channels (ResNet's first stage, the stems,
  the narrow presets); XLA's own (Eigen) convolutions keep every core busy. The option keeps
  YNNPACK's dots and reductions. An XLA_FLAGS that sets it wins (to compare both kernels); a
  jaxlib without it compiles with its defaults. A program run once per run (a network's init)
  costs its compile, not its run, so it is compiled without LLVM's optimizations.
- Convolutions as matmuls. XLA's CPU convolution is very slow for small outputs with many
  channels, where the same product as strided patches times the kernel (im2col) is one fast
  matmul: on CPU, 1x1 kernels are matmuls and larger ones with outputs of at most 2x2 im2col.
- The train step compiled ahead of time with the options, as jax.pmap takes none.
"""
import functools
import os

from absl import logging
import jax
from jax import lax
import jax.numpy as jnp
import jaxlib
import numpy as np

YNN_FUSION_TYPES = "xla_cpu_experimental_ynn_fusion_type"
CPU_OPTIONS = {YNN_FUSION_TYPES: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
RUN_ONCE_CPU_OPTIONS = {"xla_backend_optimization_level": 0}


def for_platform(platform, *, run_once=False):
  """The compile options on `platform` ('cpu', 'gpu', 'tpu') of our network programs, or with
  `run_once` of a program run once per run: a dict."""
  if run_once:
    return dict(RUN_ONCE_CPU_OPTIONS) if platform == "cpu" else {}
  return dict(_options(platform))


@functools.lru_cache(maxsize=None)
def _options(platform):
  if platform != "cpu":
    return ()
  if YNN_FUSION_TYPES in os.environ.get("XLA_FLAGS", ""):
    logging.info("XLA_FLAGS sets %s; byol_jax leaves it as it is.", YNN_FUSION_TYPES)
    return ()
  try:
    jax.jit(lambda x: x, compiler_options=CPU_OPTIONS).lower(np.zeros((), np.float32)).compile()
  except Exception as e:  # pylint: disable=broad-except; jax's error class varies by version.
    if "No such compile option" not in str(e):
      raise
    logging.info("This jaxlib (%s) has no compile option %s: its default CPU kernels run.",
                 jaxlib.__version__, YNN_FUSION_TYPES)
    return ()
  return tuple(CPU_OPTIONS.items())


def jit(fn, *, run_once=False, **jit_kwargs):
  """jax.jit with the options of the default backend (`run_once`: see for_platform)."""
  options = for_platform(jax.default_backend(), run_once=run_once)
  return jax.jit(fn, compiler_options=options or None, **jit_kwargs)


def jit_once(fn):
  """jax.jit for a program run once per run, compiled fast on CPU (the module docstring)."""
  return jit(fn, run_once=True)


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


def compile_ahead(mapped, platform):
  """`mapped` (a jax.pmap), compiled ahead of time with the platform's options, once per input
  signature; `mapped` itself where there are none. Not for multi-process runs: their
  ahead-of-time executables do not take host-local arrays."""
  options = for_platform(platform)
  if not options:
    return mapped
  executables = {}

  def compiled(*args):
    leaves, treedef = jax.tree.flatten(args)
    signature = (treedef, tuple((x.shape, x.dtype) for x in leaves))
    if signature not in executables:
      executables[signature] = mapped.lower(*args).compile(compiler_options=options)
    return executables[signature](*args)

  return compiled
