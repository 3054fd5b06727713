"""experiments/benchmarks/tpu_compile.py compiles the real train step for a TPU topology, here.

Needs libtpu (`pip install -e ".[tpu]"`), which CI does not install: skipped without it.
"""
import copy
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.benchmarks import tpu_compile
from train_helpers import small_config

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


@pytest.mark.slow
@pytest.mark.skipif(
    _NO_LIBTPU, reason="libtpu is not installed (pip install -e '.[tpu]'); "
    "compiling for a TPU topology needs it")
def test_an_accumulated_step_reports_the_flops_per_image_of_the_whole_batch():
  """Two micro-batches of 8 against 16 at once: the same FLOPs per image (to 5%: the update,
  outside the loop, is counted per micro-batch image, not negligible at this size). Memory is
  not compared: a step this small keeps next to nothing in HBM temporaries."""
  whole, accumulated = (tpu_compile.measure(
      small_config(compute_dtype="bfloat16", norm="gn", gn_groups=4, batch_size=64,
                   accumulation_steps=k), "v5e-4", per_device_batch=16) for k in (1, 2))
  assert accumulated["accumulation_steps"] == 2 and accumulated["global_batch"] == 64
  assert accumulated["gflop_per_image"] == pytest.approx(whole["gflop_per_image"], rel=0.05)
  assert accumulated["state_donated"]


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


def _fake_measure(per_image_gib, fixed_gib=0.0, hbm_gib=16, exhausted_from=None,
                  recomputes_from=None, plateau_gib=None):
  """A stand-in for tpu_compile.measure: peak memory linear in the batch, no compile.

  From `recomputes_from` on, it fits as XLA does under memory pressure: the peak stays under the
  HBM, the FLOPs per image go up. With `plateau_gib`, XLA's pressure starts earlier, as measured
  on v3: the peak stops growing there while the FLOPs per image rise by less than the tolerance.
  """
  compiled = []

  def measure_at(batch):
    compiled.append(batch)
    if exhausted_from and batch >= exhausted_from:
      raise RuntimeError("RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm.")
    recomputes = recomputes_from and batch >= recomputes_from
    peak = fixed_gib + per_image_gib * batch
    on_plateau = plateau_gib is not None and peak > plateau_gib
    return {
        "per_device_batch": batch,
        "peak_gib": 0.9 * hbm_gib if recomputes else min(peak, plateau_gib or peak),
        "gflop_per_image": 66.0 if recomputes else 64.3 if on_plateau else 64.0, "hbm_gib": hbm_gib,
        "compile_s": 1.0
    }

  return measure_at, compiled


@pytest.mark.parametrize(
    "per_image, fixed, exhausted_from, recomputes_from, max_compiles, expected, compiles",
    [
        # Peak proportional to the batch: the first guess is exact (16.0 GiB at 160 fits).
        (0.1, 0.0, None, None, 4, (160, False), [160, 168]),
        # A fixed part: the first guess falls short, the secant through two measurements is exact.
        (0.1, 1.0, None, None, 4, (144, False), [64, 144, 152]),
        (0.1, 1.0, None, None, 1, (64, True), [64]),  # Out of compiles: a lower bound.
        # XLA refuses from 100 on: bisection between what fits and what it refused.
        (0.1, 0.0, 100, None, 4, (96, True), [160, 80, 120, 96]),
        (0.1, 0.0, 100, None, 5, (96, False), [160, 80, 120, 96, 104]),
        # XLA fits from 100 on by recomputing (3% more FLOPs per image): that is not a fit.
        (0.1, 0.0, None, 100, 5, (96, False), [160, 80, 120, 96, 104]),
        (3.0, 0.0, None, None, 4, (None, False), []),  # The row's own batch does not fit.
    ])
def test_largest_batch_finds_the_boundary_to_a_step_of_8_from_the_rows_measurement(
    per_image, fixed, exhausted_from, recomputes_from, max_compiles, expected, compiles):
  measure_at, compiled = _fake_measure(per_image, fixed, exhausted_from=exhausted_from,
                                       recomputes_from=recomputes_from)
  first = {
      "per_device_batch": 8, "peak_gib": fixed + per_image * 8, "gflop_per_image": 64.0,
      "hbm_gib": 16
  }
  batch, capped, trials = tpu_compile.largest_batch(first, measure_at, max_compiles=max_compiles)
  assert (batch, capped) == expected
  assert compiled == compiles  # The row's own batch is not compiled again.
  assert [t["batch"] for t in trials] == compiles
  fitting = [t["batch"] for t in trials if t["verdict"] == "fits"]
  if fitting:
    assert batch == max(fitting)


@pytest.mark.parametrize(
    "recomputes_from, max_compiles, expected, compiles",
    [
        # Out of compiles, with a batch above that fails: the boundary is known to 248-304.
        (300, 4, (248, True), [120, 216, 248, 312]),
        (400, 9, (392, False), [120, 216, 248, 312, 440, 376, 408, 392, 400]),
    ])
def test_largest_batch_gallops_where_the_peak_stops_growing(recomputes_from, max_compiles, expected,
                                                            compiles):
  measure_at, compiled = _fake_measure(0.07, 0.5, recomputes_from=recomputes_from, plateau_gib=14.0)
  first = {"per_device_batch": 8, "peak_gib": 1.06, "gflop_per_image": 64.0, "hbm_gib": 16}
  batch, capped, _ = tpu_compile.largest_batch(first, measure_at, max_compiles=max_compiles)
  assert (batch, capped) == expected
  assert compiled == compiles


def test_largest_batch_hands_over_the_search_so_far_before_each_compile():
  measure_at, _ = _fake_measure(0.1, 1.0)
  kept = []
  first = {"per_device_batch": 8, "peak_gib": 1.8, "gflop_per_image": 64.0, "hbm_gib": 16}
  result = tpu_compile.largest_batch(first, measure_at,
                                     keep=lambda *search: kept.append(copy.deepcopy(search)))
  assert result[:2] == (144, False)
  # Killed during a compile, the row keeps the batches measured before it, as a capped search.
  assert [(batch, capped, [t["batch"] for t in trials]) for batch, capped, trials in kept
         ] == [(8, True, []), (64, True, [64]), (144, True, [64, 144])]


def test_the_table_gives_a_capped_search_as_the_range_it_left_open():
  search = [{"batch": 424, "verdict": "fits"}, {"batch": 480, "verdict": "fits"},
            {"batch": 544, "verdict": "recomputes"}]
  record = {"largest_per_device_batch": 480, "largest_batch_capped": True, "batch_search": search}
  assert tpu_compile._largest(record) == "480–536"  # pylint: disable=protected-access
  record["batch_search"] = record["batch_search"][:2]
  assert tpu_compile._largest(record) == "≥ 480"  # pylint: disable=protected-access


def test_the_table_gives_an_accumulated_batch_as_its_micro_batches():
  assert tpu_compile._batch({"per_device_batch": 128}) == "128"  # pylint: disable=protected-access
  record = {"per_device_batch": 1024, "accumulation_steps": 4}
  assert tpu_compile._batch(record) == "1024 (4 × 256)"  # pylint: disable=protected-access


def test_largest_batch_reraises_errors_other_than_out_of_memory():

  def measure_at(batch):
    raise RuntimeError(f"INVALID_ARGUMENT at batch {batch}")

  first = {"per_device_batch": 8, "peak_gib": 1.0, "gflop_per_image": 64.0, "hbm_gib": 16}
  with pytest.raises(RuntimeError, match="INVALID_ARGUMENT"):
    tpu_compile.largest_batch(first, measure_at)
