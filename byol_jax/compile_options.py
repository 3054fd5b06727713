"""XLA compile options: on CPU, XLA's own convolutions, not YNNPACK's; init programs unoptimized.

Why: on CPU, jaxlib hands every float32 convolution to YNNPACK, which runs a layer on one thread
whenever it has fewer than 128 input or output channels: ResNet's first stage, the stems, and more
of the narrow presets. XLA's own (Eigen) convolutions keep every core busy
(experiments/results/train_step.md and conv.md time both). The option keeps YNNPACK's dots and
reductions, jaxlib's default set of YNNPACK fusions less convolutions. It picks kernels, not math:
results agree to float32 rounding.

An XLA_FLAGS that sets the option itself wins (to compare both kernels), and a jaxlib without
the option compiles with its defaults.

A program that runs once per run (a network's init) costs its compile, not its run: on CPU it is
compiled without LLVM's optimizations, which take most of that compile (hundreds of small
initializer fusions). Values agree to float32 rounding.
"""
import functools
import os

from absl import logging
import jax
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
