"""experiments/tpu_compile.py compiles the real train step for a TPU topology, on this CPU host.

Needs libtpu (`pip install -e ".[tpu]"`), which CI does not install: skipped without it.
"""
import importlib.util
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from train_helpers import small_config

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments"))

import tpu_compile  # pylint: disable=g-import-not-at-top,wrong-import-position

_NO_LIBTPU = importlib.util.find_spec("libtpu") is None


@pytest.mark.slow
@pytest.mark.skipif(
    _NO_LIBTPU, reason="libtpu is not installed (pip install -e '.[tpu]'); "
    "compiling for a TPU topology needs it")
def test_the_train_step_compiles_for_a_v5e_slice_with_its_state_donated():
  config = small_config(compute_dtype="bfloat16")
  result = tpu_compile.measure(config, "v5e-4", per_device_batch=2)
  assert result["devices"] == 4 and result["global_batch"] == 8
  assert result["state_donated"], result  # The new state reuses the old one's buffers.
  # All that is not aliased is what the step never reads: BN's moving averages (4 norms here).
  assert 0 < result["state_unread_mib"] < 0.1, result
  assert 0 < result["peak_gib"] < result["hbm_gib"] and result["gflop_per_image"] > 0


def test_every_row_names_a_known_config_and_topology():
  configs = {p[:-3] for p in os.listdir(tpu_compile.REPO / "configs")}
  for name, row in tpu_compile.ROWS.items():
    assert row.config in configs and row.topology in tpu_compile.TOPOLOGIES, name
    assert row.topology.split("-")[0] in tpu_compile.CHIPS, name
    tpu_compile.load_config(row.config, row.overrides)  # Validates.


def test_parameter_bytes_counts_the_donated_inputs_an_output_reuses_and_the_rest():
  """`unread` is donated but never read: jax prunes it, so only `w` (8 floats) is aliased."""

  def step(state, batch):
    return {"w": state["w"] + batch.sum(), "unread": jnp.zeros(3)}, batch.max()

  state = {"w": np.zeros((8,), np.float32), "unread": np.zeros((3,), np.float32)}
  compiled = jax.jit(step, donate_argnums=0).lower(state, np.zeros((5,), np.int8)).compile()
  assert tpu_compile.parameter_bytes(compiled.as_text()) == (8 * 4, 5)
  undonated = jax.jit(step).lower(state, np.zeros((5,), np.int8)).compile()
  assert tpu_compile.parameter_bytes(undonated.as_text()) == (0, 8 * 4 + 5)
