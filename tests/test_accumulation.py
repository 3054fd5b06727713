"""Gradient accumulation (config.accumulation_steps): k micro-batches make the big batch's update.

Each case's step is compiled once per module, as map_over_devices compiles it on CPU, and serves
both the equality and the memory tests.
"""
import functools

import jax
import numpy as np
import pytest

from byol_jax import cpu_speed
from byol_jax import config as config_lib
from byol_jax import model
from byol_jax import train
import train_helpers
from train_helpers import NUM_CLASSES

# Every batch-independent norm: GN+WS in the encoder, LN and none in the heads; and the modified
# init, whose norms are per-channel affines.
SETTINGS = {
    "gn_ws-ln-none":
        dict(norm="gn", gn_groups=4, weight_standardization=True, projector_norm="ln",
             predictor_norm="none"),
    "bn_stats":
        dict(norm="none", init="bn_stats"),
}
BATCH_SIZE = 16  # 4 per device on 4 devices: 4 micro-batches of 1.
STEPS = 2  # The second update reads the momentum and the target the first one wrote.


def _config(setting, accumulation_steps):
  return train_helpers.small_config(batch_size=BATCH_SIZE, accumulation_steps=accumulation_steps,
                                    **SETTINGS[setting])


@functools.lru_cache(maxsize=None)
def _fresh_state(setting):
  """The same for every k: accumulation changes the update, not the state."""
  config = _config(setting, 1)
  return train.init_state(config, jax.random.PRNGKey(config.seed),
                          image_shape=(config.image_size,) * 2 + (3,), num_classes=NUM_CLASSES,
                          steps_per_epoch=10)


class _Case:
  """One (setting, k, devices): its compiled step, and the state and metrics after STEPS."""

  def __init__(self, setting, accumulation_steps, num_devices):
    config = _config(setting, accumulation_steps)
    devices = jax.devices()[:num_devices]
    state = train.replicate(_fresh_state(setting), devices)
    mapped = jax.pmap(train.make_update(config, num_classes=NUM_CLASSES, steps_per_epoch=10),
                      axis_name=model.AXIS, devices=devices)
    lowered = mapped.lower(state, train_helpers.global_batch(config, 0, num_devices))
    self.compiled = lowered.compile(compiler_options=cpu_speed.for_platform("cpu") or None)
    self.metrics = []
    for step in range(STEPS):
      state, metrics = self.compiled(state, train_helpers.global_batch(config, step, num_devices))
      self.metrics.append(jax.tree.map(lambda x: float(np.asarray(x)[0]), metrics))
    self.state = train.unreplicate(state)


@pytest.fixture(scope="module")
def case():
  """case(setting, accumulation_steps, num_devices) -> its _Case, built once per module."""
  cases = {}

  def get(*key):
    if key not in cases:
      cases[key] = _Case(*key)
    return cases[key]

  return get


def _assert_close_to_update(start, big, accumulated, rtol, atol=1e-6):
  """Each leaf agrees to `rtol` of its change over the steps (plus `atol` per element)."""
  for (path, x), y, x0 in zip(jax.tree_util.tree_leaves_with_path(big),
                              jax.tree.leaves(accumulated), jax.tree.leaves(start)):
    difference, change = np.linalg.norm(x - y), np.linalg.norm(x - x0)
    assert difference <= rtol * change + atol * np.sqrt(np.size(x)), (jax.tree_util.keystr(path),
                                                                      difference, change)


# Accumulation sums the gradient in a different order than one big batch does.
_RTOL = 1e-3


# Four compiles in all: each setting's whole batch on one device, against 4 micro-batches on one
# device (bn_stats) and on each of 4 devices (GN+WS).
@pytest.mark.slow
@pytest.mark.parametrize("setting, num_devices", [("gn_ws-ln-none", 4), ("bn_stats", 1)])
def test_four_micro_batches_make_the_update_of_the_whole_batch(case, setting, num_devices):
  big = case(setting, 1, 1)
  accumulated = case(setting, 4, num_devices)
  start = _fresh_state(setting)
  for field in ("online_params", "target_params", "opt_state", "probe_params", "probe_opt_state"):
    _assert_close_to_update(getattr(start, field), getattr(big.state, field),
                            getattr(accumulated.state, field), rtol=_RTOL)
  assert int(accumulated.state.step) == STEPS
  # The collapse monitors are over each device's batch, so they match where the device count does.
  keys = big.metrics[0].keys() if num_devices == 1 else ("loss", "probe_loss", "probe_accuracy",
                                                         "positive_cosine", "grad_norm")
  for step, (expected, got) in enumerate(zip(big.metrics, accumulated.metrics)):
    for key in keys:
      np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, atol=1e-6,
                                 err_msg=f"{key} at step {step}")


@pytest.mark.slow
def test_the_scan_keeps_one_micro_batch_of_activations(case):
  """Compiled on CPU, 4 micro-batches need less temporary memory than the whole batch."""
  whole = case("bn_stats", 1, 1).compiled.memory_analysis().temp_size_in_bytes
  micro = case("bn_stats", 4, 1).compiled.memory_analysis().temp_size_in_bytes
  assert micro < 0.75 * whole, (micro, whole)


def test_accumulation_steps_must_divide_each_devices_batch():
  with pytest.raises(config_lib.ConfigError, match="accumulation_steps=3 must be a positive"):
    train_helpers.small_config(batch_size=16, accumulation_steps=3)
  # 16 / 4 devices = 4 per device, which 8 micro-batches cannot split: refused while tracing.
  config = _config("gn_ws-ln-none", 8)
  update = train.make_update(config, num_classes=NUM_CLASSES, steps_per_epoch=10)
  state = train.state_shapes(config, image_shape=(16, 16, 3), num_classes=NUM_CLASSES,
                             steps_per_epoch=10)
  state = jax.tree.map(lambda x: jax.ShapeDtypeStruct((4,) + x.shape, x.dtype), state)
  with pytest.raises(config_lib.ConfigError, match="does not divide the per-device batch of 4"):
    jax.eval_shape(jax.vmap(update, axis_name=model.AXIS), state,
                   train_helpers.global_batch(config, 0, 4))
  # The same check, which run.plan makes at start-up once the device count is known.
  with pytest.raises(config_lib.ConfigError, match="does not divide the per-device batch of 4"):
    train.check_accumulation(4, 8)
  train.check_accumulation(8, 4)


@pytest.mark.parametrize("overrides, problem", [
    (dict(norm="bn"), "BN's statistics would be those of each micro-batch"),
    (dict(norm="gn", predictor_norm="bn"), r"\{'predictor_norm': 'bn'\}"),
    (dict(norm="bn_stopgrad"), "BN's statistics"),
    (dict(method="simclr", temperature=0.1, norm="gn"), "only config.batch_size / 2 negatives"),
])
def test_batch_dependent_losses_are_refused_with_the_problem_and_the_fix(overrides, problem):
  with pytest.raises(config_lib.ConfigError, match=problem) as error:
    train_helpers.small_config(accumulation_steps=2, **overrides)
  assert "accumulation_steps=1" in str(error.value)
