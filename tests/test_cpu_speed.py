"""cpu_speed: CPU compile options move convolutions off YNNPACK; results agree."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byol_jax import cpu_speed
from byol_jax import model
from byol_jax import train


def _conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _uses_ynnpack(fn, options, *args):
  hlo = jax.jit(fn, compiler_options=options or None).lower(*args).compile().as_text()
  return "__ynn_fusion" in hlo


def test_cpu_options_move_only_convolutions_off_ynnpack():
  options = cpu_speed.for_platform("cpu")
  if not options:
    pytest.skip(f"jaxlib {jax.__version__} has no {cpu_speed.YNN_FUSION_TYPES} option")
  x, w = jnp.ones((8, 16, 16, 64)), jnp.ones((3, 3, 64, 64))
  assert _uses_ynnpack(_conv, None, x, w)  # What the option is for: the default takes convs.
  assert not _uses_ynnpack(_conv, options, x, w)
  # Dots and reductions keep the default's kernels.
  matrix = jnp.ones((256, 256))
  for fn, args in ((jnp.dot, (matrix, matrix)), (lambda a: a.sum(axis=(1, 2)), (x,))):
    assert _uses_ynnpack(fn, options, *args) == _uses_ynnpack(fn, None, *args)


def test_only_cpu_gets_options():
  assert cpu_speed.for_platform("gpu") == {}
  assert cpu_speed.for_platform("tpu") == {}
  assert cpu_speed.for_platform("gpu", run_once=True) == {}
  assert cpu_speed.for_platform("cpu", run_once=True) == cpu_speed.RUN_ONCE_CPU_OPTIONS


def test_xla_flags_setting_the_option_wins(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", f"--{cpu_speed.YNN_FUSION_TYPES}=LIBRARY_FUSION_TYPE_DOT")
  cpu_speed._options.cache_clear()  # pylint: disable=protected-access
  try:
    assert cpu_speed.for_platform("cpu") == {}
  finally:
    cpu_speed._options.cache_clear()  # pylint: disable=protected-access


def test_mapped_function_with_options_matches_plain_pmap():
  """map_over_devices compiles per input signature and computes what jax.pmap computes."""

  def per_replica(w, x):
    y = jax.nn.relu(_conv(x, w))
    return w - 0.1 * jax.grad(lambda w: jnp.mean(_conv(y, w)**2))(w), jax.lax.pmean(
        y.mean(), model.AXIS)

  devices = jax.devices()[:2]
  ours = train.map_over_devices(per_replica, devices=devices, donate=False)
  plain = jax.pmap(per_replica, axis_name=model.AXIS, devices=devices)
  rng = np.random.default_rng(0)
  w = np.stack([rng.normal(size=(3, 3, 32, 32)).astype(np.float32) / 17] * 2)
  for batch in (4, 4, 6):  # The second call reuses the executable, the third compiles anew.
    x = rng.normal(size=(2, batch, 8, 8, 32)).astype(np.float32)
    for a, b in zip(ours(w, x), plain(w, x)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
