"""Tests of byol_jax.nets: shapes, counts, WS, batch (in)dependence, errors,
conv lowering and mixed precision."""
import functools

import haiku as hk
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from byol_jax import cpu_speed
from byol_jax import model
from byol_jax import nets

_ALL_NORMS = nets.NORMS + ("affine",)
_RNG = jax.random.PRNGKey(0)
# Small ResNet inputs, one shape for all tests that run ops (op by op, not
# jitted), so the ops compiled for one test serve the others.
_IMAGES = (4, 8, 8, 3)


def _resnet(**kwargs):
  return hk.transform_with_state(lambda x, is_training: nets.ResNet(**kwargs)(x, is_training))


def _mlp(**kwargs):
  return hk.transform_with_state(lambda x, is_training: nets.MLP(**kwargs)(x, is_training))


def _abstract_params(f, shape=(1, 32, 32, 3)):
  """Parameter shapes without running anything (cheap even for ResNet-50)."""
  return jax.eval_shape(lambda x: f.init(_RNG, x, True)[0], jnp.zeros(shape))


def _count(params):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def _norm_paths(params):
  return sorted(k for k, v in params.items() if "scale" in v)


# Torchvision's resnet50 / resnet18 minus the 1000-way fc layer; ResNet-18 has,
# as the official BYOL one, a projection shortcut on stage 1's first block too
# (a 1x1 64->64 conv and its norm: 4,096 + 128). Without norm parameters,
# 2 x (norm channels): 26,560 for ResNet-50 (stem 64, 6c per bottleneck, 4c per
# projection) and 4,864 for ResNet-18.
_EXPECTED_COUNTS = {
    (50, True): 23_508_032,
    (50, False): 23_508_032 - 2 * 26_560,
    (18, True): 11_176_512 + 4_224,
    (18, False): 11_176_512 + 4_224 - 2 * 4_864,
}


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("norm", _ALL_NORMS)
def test_resnet_parameter_count(depth, norm):
  params = _abstract_params(_resnet(depth=depth, norm=norm))
  assert _count(params) == _EXPECTED_COUNTS[(depth, norm != "none")]


def test_parameter_counts_per_network():
  """What a run prints once: the parameters of each top-level module."""
  params = {
      "encoder/~/conv": {"w": np.zeros(
          (3, 3, 3, 8))}, "encoder/~/bn": {"scale": np.zeros(8), "offset": np.zeros(8)},
      "projector/~/linear": {"w": np.zeros(
          (8, 4))}, "probe": {"w": np.zeros((8, 10)), "b": np.zeros(10)}
  }
  assert model.parameter_counts(params) == {"encoder": 232, "projector": 32, "probe": 90}


@pytest.mark.slow  # Compiles ResNet-18's gradient twice over (about a minute on 2 cores).
def test_remat_blocks_keep_the_numbers_and_recompute_in_the_backward_pass():
  """The same gradients; the backward pass of each block runs its forward again."""
  x = jax.random.normal(_RNG, (2, 8, 8, 3))
  plain, remat = (
      _resnet(depth=18, width=0.25, stem="cifar", norm="gn", remat_blocks=r) for r in (False, True))
  params, state = plain.init(_RNG, x, True)

  def loss(f):
    return lambda p: jnp.sum(f.apply(p, state, None, x, True)[0]**2)

  both = jax.jit(lambda p: (jax.grad(loss(remat))(p), jax.grad(loss(plain))(p)))  # One compile.
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6), *both(params))
  count = lambda f: str(jax.make_jaxpr(jax.grad(loss(f)))(params)).count("remat")
  assert count(plain) == 0 and count(remat) == 8  # One per block of ResNet-18.


def test_module_paths_identical_for_every_norm_and_ws():
  paths = {
      (norm, ws): sorted(_abstract_params(_resnet(depth=18, norm=norm, weight_standardization=ws)))
      for norm in ("bn", "ln", "gn", "affine") for ws in (False, True)
  }
  reference = paths[("bn", False)]
  assert all(p == reference for p in paths.values())
  norms = _norm_paths(_abstract_params(_resnet(depth=18, norm="gn")))
  assert len(norms) == 1 + 8 * 2 + 4  # Stem, 2 per block, 4 projections.


def test_ws_adds_no_parameters():
  plain = _abstract_params(_resnet(depth=18, norm="gn"))
  ws = _abstract_params(_resnet(depth=18, norm="gn", weight_standardization=True))
  assert jax.tree.map(jnp.shape, plain) == jax.tree.map(jnp.shape, ws)


@pytest.mark.parametrize("depth,width,stem,size,dim,last_spatial",
                         [(18, 1, "cifar", 32, 512, 4), (18, 1, "imagenet", 64, 512, 2),
                          (18, 2, "cifar", 32, 1024, 4), (50, 1, "imagenet", 64, 2048, 2),
                          (50, 2, "cifar", 16, 4096, 2), (18, 0.25, "cifar", 16, 128, 2),
                          (50, 0.25, "cifar", 16, 512, 2)])
def test_resnet_output_shape(depth, width, stem, size, dim, last_spatial):
  block_inputs = []

  def record(next_f, args, kwargs, context):
    if context.method_name == "__call__" and "stage4" in context.module.name:
      block_inputs.append(args[0].shape)
    return next_f(*args, **kwargs)

  def forward(x):
    with hk.intercept_methods(record):
      return nets.ResNet(depth=depth, width=width, stem=stem)(x, True)

  f = hk.transform_with_state(forward)
  x = jnp.zeros((2, size, size, 3))
  params, state = jax.eval_shape(f.init, _RNG, x)
  out, _ = jax.eval_shape(f.apply, params, state, None, x)
  assert out.shape == (2, dim) and nets.embedding_size(depth, width) == dim
  # The last block sees the stem's downsampling (x4 for imagenet, x1 cifar).
  assert block_inputs[-1][1:3] == (last_spatial, last_spatial)
  kernel = 7 if stem == "imagenet" else 3
  assert params["res_net/~/stem_conv"]["w"].shape == (kernel, kernel, 3, int(64 * width))


def test_mlp_shapes_and_names():
  f = _mlp(hidden_size=32, output_size=8, norm="gn", gn_groups=4)
  params = _abstract_params(f, (3, 16))
  assert jax.tree.map(jnp.shape, params) == {
      "mlp/~/linear_0": {"w": (16, 32), "b": (32,)},
      "mlp/~/norm": {"scale": (32,), "offset": (32,)},
      "mlp/~/linear_1": {"w": (32, 8)},
  }


# Weight standardization.


@pytest.mark.parametrize("shape", [(3, 3, 8, 16), (20, 5), (1, 1, 4, 6)])
@pytest.mark.parametrize("seed", [0, 1])
def test_standardized_weight_statistics(shape, seed):
  rng = np.random.default_rng(seed)
  w = rng.normal(rng.normal(), rng.uniform(0.5, 3), shape).astype(np.float32)
  eps = 1e-4
  ws = np.asarray(nets.standardize_weight(jnp.asarray(w), eps))
  axes = tuple(range(len(shape) - 1))
  np.testing.assert_allclose(ws.mean(axes), 0, atol=1e-5)
  # Unit variance up to eps: exactly var / (var + eps).
  var = w.var(axes)
  np.testing.assert_allclose(ws.var(axes), var / (var + eps), rtol=1e-4)
  assert np.all(np.abs(ws.var(axes) - 1) <= eps / var + 1e-5)


def _ws_pair(kind):
  """(ws_layer, plain_layer, input shape) for a conv or a linear."""
  if kind == "conv":
    make = lambda cls: lambda x: cls(6, kernel_shape=3, stride=2, name="l")(x)
    fns, shape = (make(nets.WSConv2D), make(hk.Conv2D)), (2, 8, 8, 4)
  else:
    make = lambda cls: lambda x: cls(6, name="l")(x)
    fns, shape = (make(nets.WSLinear), make(hk.Linear)), (2, 5)
  return (*(hk.without_apply_rng(hk.transform(f)) for f in fns), shape)


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_ws_layer_equals_plain_layer_on_standardized_weight(kind):
  ws_layer, plain_layer, shape = _ws_pair(kind)
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape).astype(np.float32)
  abstract = jax.eval_shape(ws_layer.init, _RNG, x)
  assert abstract == jax.eval_shape(plain_layer.init, _RNG, x)  # No extras.
  params = jax.tree.map(lambda a: rng.normal(0.5, 2.0, a.shape).astype(np.float32), abstract)

  @jax.jit
  def outputs(params):
    layer = params["l"]
    standardized = {"l": dict(layer, w=nets.standardize_weight(layer["w"]))}
    moved = {"l": dict(layer, w=3 * layer["w"] - 1)}
    loss = lambda p: jnp.sum(jnp.sin(ws_layer.apply(p, x)))
    return (ws_layer.apply(params, x), plain_layer.apply(standardized, x),
            plain_layer.apply(params, x), ws_layer.apply(moved,
                                                         x), jax.grad(loss)(params)["l"]["w"])

  ws_out, want, raw_out, moved_out, grad = outputs(params)
  np.testing.assert_allclose(ws_out, want, rtol=1e-5, atol=1e-5)
  # Raw weights are not the effective ones (so the check above has teeth).
  assert not np.allclose(raw_out, ws_out, rtol=1e-2, atol=1e-2)
  # Invariant to shifting and rescaling the raw weights (up to eps).
  np.testing.assert_allclose(moved_out, ws_out, rtol=1e-3, atol=1e-3)
  assert np.all(np.isfinite(grad)) and np.any(np.abs(grad) > 1e-6)


@pytest.mark.parametrize("ws", [False, True])
def test_resnet_ws_uses_ws_conv_everywhere(ws):
  convs = {}

  def record(next_f, args, kwargs, context):
    if (context.method_name == "__call__" and isinstance(context.module, nets.Conv2D)):
      convs[context.module.module_name] = type(context.module)
    return next_f(*args, **kwargs)

  def forward(x):
    with hk.intercept_methods(record):
      return nets.ResNet(depth=18, weight_standardization=ws)(x, True)

  jax.eval_shape(hk.transform_with_state(forward).init, _RNG, jnp.zeros(_IMAGES))
  assert len(convs) == 1 + 8 * 2 + 4
  want = nets.WSConv2D if ws else nets.Conv2D
  assert set(convs.values()) == {want}


# Batch (in)dependence: sample 0's output must not see samples 1.. unless BN.


def _check_batch_dependence(apply_fn, shape, depends, trials=3):
  rng = np.random.default_rng(0)
  for _ in range(trials):
    x = rng.normal(size=shape).astype(np.float32)
    other = x.copy()
    other[1:] = rng.normal(2.0, 3.0, size=other[1:].shape)
    out, out_other = apply_fn(x), apply_fn(other)
    assert np.all(np.isfinite(out))
    if depends:
      assert not np.allclose(out[0], out_other[0], rtol=1e-3, atol=1e-4)
    else:
      np.testing.assert_allclose(out[0], out_other[0], rtol=1e-4, atol=1e-5)


def _random_params(params):
  """Perturbs norm scales/offsets away from 1/0, so they matter too."""
  rng = np.random.default_rng(7)
  return jax.tree.map(lambda v: v + 0.1 * rng.normal(size=v.shape).astype(v.dtype), params)


@pytest.mark.parametrize("norm,ws", [("gn", False), ("gn", True), ("ln", False), ("ln", True),
                                     ("none", False), ("none", True), ("affine", False),
                                     ("affine", True), ("bn", False)])
def test_resnet_batch_independence(norm, ws):
  f = _resnet(depth=10, stem="cifar", norm=norm, weight_standardization=ws, gn_groups=4,
              zero_init_last_norm=False)
  shape = _IMAGES
  params, state = f.init(_RNG, jnp.zeros(shape), True)
  params = _random_params(params)
  # Op by op: the compiled ops are shared by every norm kind, unlike a jit.
  apply_fn = lambda x: f.apply(params, state, None, x, True)[0]
  _check_batch_dependence(apply_fn, shape, depends=norm in ("bn", "bn_stopgrad"))


@pytest.mark.parametrize("norm", _ALL_NORMS)
@pytest.mark.parametrize("ws", [False, True])
def test_mlp_batch_independence(norm, ws):
  f = _mlp(hidden_size=32, output_size=8, norm=norm, gn_groups=4, weight_standardization=ws)
  shape = (5, 12)
  params, state = f.init(_RNG, jnp.zeros(shape), True)
  params = _random_params(params)
  apply_fn = lambda x: f.apply(params, state, None, x, True)[0]
  _check_batch_dependence(apply_fn, shape, depends=norm in ("bn", "bn_stopgrad"))


def test_bn_stopgrad_is_bn_forward_without_the_gradient_through_the_statistics():
  x = jax.random.normal(_RNG, (6, 3, 3, 4)) * 2.0 + 1.0

  def norm(kind):
    f = hk.transform_with_state(lambda x, t: nets.make_norm(kind, name="norm")(x, t))
    params, state = f.init(_RNG, x, True)
    return lambda x, t: f.apply(params, state, None, x, t)

  bn, stopgrad = norm("bn"), norm("bn_stopgrad")
  (bn_out, bn_state), (out, state) = bn(x, True), stopgrad(x, True)
  np.testing.assert_allclose(out, bn_out, atol=1e-5)
  for ema in ("mean_ema", "var_ema"):  # The moving averages evaluation uses, updated alike.
    np.testing.assert_allclose(state[f"norm/~/{ema}"]["average"].ravel(),
                               bn_state[f"norm/~/{ema}"]["average"].ravel(), rtol=1e-5)
  # The gradient of one example's output: BN's reaches every example, bn_stopgrad's only its own.
  first_output = lambda f: jax.grad(lambda x: jnp.sum(f(x, True)[0][0]**2))(x)
  assert np.abs(first_output(bn)[1:]).max() > 1e-2
  assert np.abs(first_output(stopgrad)[1:]).max() == 0.0


def test_affine_bn_backward_is_the_affine_forward_with_bns_gradient_on_its_statistics_batch():
  """With BN's scale and offset folded in (as the modified init sets them on its statistics
  batch), the affine layer computes BN's output, and with bn_backward also BN's input gradient."""
  x = jax.random.normal(_RNG, (6, 3, 3, 4)) * 2.0 + 1.0
  mean, var = jnp.mean(x, (0, 1, 2)), jnp.var(x, (0, 1, 2))
  scale = 1.5 * jax.lax.rsqrt(var + 1e-5)  # gamma 1.5, beta 0.5, as affine parameters.
  folded = {"norm": {"scale": scale, "offset": 0.5 - mean * scale}}
  bn_params = {
      "norm": {"scale": jnp.full((1, 1, 1, 4), 1.5), "offset": jnp.full((1, 1, 1, 4), 0.5)}
  }

  def output_and_gradient(kind, params):
    f = hk.transform_with_state(lambda x: nets.make_norm(kind, name="norm")(x, True))
    state = f.init(_RNG, x)[1]
    weights = jax.random.normal(jax.random.PRNGKey(1), x.shape)
    loss = lambda x: jnp.sum(f.apply(params, state, None, x)[0] * weights)
    return f.apply(params, state, None, x)[0], jax.grad(loss)(x)

  bn_out, bn_grad = output_and_gradient("bn", bn_params)
  out, grad = output_and_gradient("affine_bn_backward", folded)
  np.testing.assert_allclose(out, bn_out, atol=1e-5)
  np.testing.assert_allclose(grad, bn_grad, atol=1e-5)
  affine_out, affine_grad = output_and_gradient("affine", folded)
  np.testing.assert_allclose(affine_out, bn_out, atol=1e-5)  # Same forward,
  assert np.abs(affine_grad - bn_grad).max() > 0.1  # but not BN's gradient.


def test_bn_eval_on_batch_of_one_uses_moving_averages():
  f = _resnet(depth=10, stem="cifar", norm="bn", zero_init_last_norm=False)
  x = jax.random.normal(_RNG, _IMAGES)
  params, state = f.init(_RNG, x, True)
  _, state = f.apply(params, state, None, x, True)
  evaluate = lambda x: f.apply(params, state, None, x, False)[0]
  one = evaluate(x[:1])
  assert one.shape == (1, 512) and np.all(np.isfinite(one))
  # Float error of the deep net only; batch statistics would differ by O(1).
  np.testing.assert_allclose(one, evaluate(x)[:1], rtol=2e-3, atol=1e-3)


def test_cross_replica_bn_matches_global_batch():
  num_devices = 4
  assert jax.local_device_count() >= num_devices, "see tests/conftest.py"

  def forward(x, is_training, axis):
    features = nets.ResNet(depth=10, stem="cifar", norm="bn", bn_cross_replica_axis=axis,
                           zero_init_last_norm=False)(x, is_training)
    return nets.MLP(hidden_size=16, output_size=4, norm="bn",
                    bn_cross_replica_axis=axis)(features, is_training)

  single = hk.transform_with_state(functools.partial(forward, axis=None))
  replicated = hk.transform_with_state(functools.partial(forward, axis="i"))
  x = jax.random.normal(_RNG, _IMAGES) * 2 + 1
  params, state = single.init(_RNG, x, True)
  params = _random_params(params)
  want, want_state = single.apply(params, state, None, x, True)

  broadcast = lambda t: jax.tree.map(lambda v: jnp.broadcast_to(v, (num_devices,) + v.shape), t)
  got, got_state = jax.pmap(lambda p, s, x: replicated.apply(p, s, None, x, True),
                            axis_name="i")(broadcast(params), broadcast(state),
                                           x.reshape(num_devices, -1, *x.shape[1:]))
  np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-4, atol=1e-4)
  # Float error only, amplified by BN over 4 values in the 1x1 last stage: the
  # two batch sizes sum the same products in different orders (up to 1.2e-5 on
  # a moving mean of 2e-3 with the official init).
  for k in range(num_devices):
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=2e-4, atol=2e-5),
                 jax.tree.map(lambda v: v[k], got_state), want_state)


# Zero-init of the last norm of each block.


@pytest.mark.parametrize("depth,blocks", [(18, 8), (50, 16)])
def test_is_last_block_norm_one_per_block(depth, blocks):
  paths = _norm_paths(_abstract_params(_resnet(depth=depth, norm="gn")))
  last = [p for p in paths if nets.is_last_block_norm(p)]
  assert len(last) == blocks
  block_of = lambda p: p.rsplit("/~/", 1)[0]
  assert len({block_of(p) for p in last}) == blocks
  assert {block_of(p) for p in paths if "block" in p} == {block_of(p) for p in last}
  assert not nets.is_last_block_norm("res_net/~/stem_norm")
  assert not nets.is_last_block_norm("res_net/~/stage1_block0/~/last_norm/~/mean_ema")
  assert nets.is_last_block_norm("encoder/~/res_net/~/stage2_block1/~/last_norm")


@pytest.mark.parametrize("norm", ["bn", "gn", "ln", "affine"])
@pytest.mark.parametrize("zero_init", [True, False])
def test_last_block_norm_scale_init(norm, zero_init):
  f = _resnet(depth=18, stem="cifar", norm=norm, zero_init_last_norm=zero_init)
  params, _ = f.init(_RNG, jnp.zeros(_IMAGES), True)
  for path in _norm_paths(params):
    scale = params[path]["scale"]
    want = 0.0 if zero_init and nets.is_last_block_norm(path) else 1.0
    np.testing.assert_array_equal(scale, want)
    np.testing.assert_array_equal(params[path]["offset"], 0.0)


def test_default_norm_scales_are_one_as_in_the_paper():
  params, _ = _resnet(depth=18, stem="cifar", norm="bn").init(_RNG, jnp.zeros(_IMAGES), True)
  assert all(np.all(params[p]["scale"] == 1.0) for p in _norm_paths(params))


# std of a truncated normal cut at 2 sigma, relative to its sigma: Haiku's default init.
_TRUNCATED_STD = 0.8796


@pytest.mark.parametrize("conv_init", ["haiku", "he"])
def test_conv_init_variances(conv_init):
  f = _resnet(depth=50, width=0.25, conv_init=conv_init)
  paths = ("res_net/~/stem_conv", "res_net/~/stage4_block0/~/conv_0",
           "res_net/~/stage2_block1/~/conv_1")
  # One program that returns these 3 kernels, so XLA drops the other initializers (op by op,
  # every layer shape of ResNet-50 compiles its own).
  kernels = jax.jit(
      lambda: {p: f.init(_RNG, jnp.zeros((1, 8, 8, 3)), True)[0][p]["w"] for p in paths})()
  for path, w in kernels.items():
    w = np.asarray(w)
    kh, kw, fan_in, fan_out = w.shape
    if conv_init == "haiku":  # Truncated normal, variance 1 / fan_in (the official code).
      want = _TRUNCATED_STD / np.sqrt(kh * kw * fan_in)
    else:  # He normal on the fan-out.
      want = np.sqrt(2.0 / (kh * kw * fan_out))
    assert np.std(w) == pytest.approx(want, rel=0.05), path


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_every_stage_starts_with_a_projection_shortcut(depth):
  params = _abstract_params(_resnet(depth=depth, norm="bn"))
  shortcuts = sorted(k.split("/~/")[1] for k in params if k.endswith("shortcut_conv"))
  assert shortcuts == [f"stage{s}_block0" for s in range(1, 5)]


# Errors.


def _init(f, shape=_IMAGES):
  return f.init(_RNG, jnp.zeros(shape), True)


@pytest.mark.parametrize("kind,shape", [("gn", (3, 6, 5, 16)), ("ln", (3, 6, 5, 16)),
                                        ("gn", (3, 16)), ("ln", (3, 16))])
def test_group_norm_equals_haiku_group_norm(kind, shape):
  """Values and gradients of make_norm's gn and ln against hk.GroupNorm."""
  groups = 4 if kind == "gn" else 1
  ours = hk.transform(lambda x: nets.make_norm(kind, name="norm", gn_groups=groups)(x, True))
  haiku = hk.transform(lambda x: hk.GroupNorm(groups, eps=1e-5, name="norm")(x))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(3.0, 2.0, shape).astype(np.float32))  # Mean far from 0.
  params = _random_params(ours.init(_RNG, x))
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, haiku.init(_RNG, x))
  g = jnp.asarray(rng.normal(size=shape).astype(np.float32))
  results = [
      jax.value_and_grad(lambda p, x: jnp.sum(f.apply(p, None, x) * g), (0, 1))(params, x)
      for f in (ours, haiku)
  ]
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-4), *results)


def test_unknown_norm_error():
  with pytest.raises(ValueError) as e:
    _init(_resnet(depth=18, norm="batchnorm"))
  for fragment in ("stem_norm", "'batchnorm'", "'bn'", "'ln'", "'gn'", "'none'", "'affine'"):
    assert fragment in str(e.value)
  with pytest.raises(ValueError, match="'norm'.*'layer'"):
    _init(_mlp(norm="layer"), (2, 4))


def test_bad_group_count_error():
  with pytest.raises(ValueError) as e:
    _init(_resnet(depth=18, stem="cifar", norm="gn", gn_groups=3))
  message = str(e.value)
  assert "res_net/~/stem_norm" in message
  assert "gn_groups=3" in message and "64 channels" in message
  assert "1, 2, 4, 8, 16, 32, 64" in message
  with pytest.raises(ValueError, match="gn_groups must be >= 1"):
    _init(_resnet(depth=18, norm="gn", gn_groups=0))


@pytest.mark.parametrize("kwargs,fragments", [
    (dict(depth=42), ("42", "10, 18, 34, 50, 101, 152, 200")),
    (dict(stem="tiny"), ("'tiny'", "'imagenet'", "'cifar'")),
    (dict(width=5), ("width", "0.25, 0.5, 1, 2, 3, 4", "5")),
    (dict(width=1.5), ("width", "1.5")),
])
def test_resnet_argument_errors(kwargs, fragments):
  with pytest.raises(ValueError) as e:
    _init(_resnet(**kwargs))
  for fragment in fragments:
    assert fragment in str(e.value)


# Conv lowering: on CPU some convs are matmuls, with lax's results.

# (input size, kernel, stride, input channels, output channels), input H x W
# is size x (size + 1): the ImageNet stem, the 3x3 and 1x1 convs of both
# block kinds, odd and even sizes for stride 2's asymmetric SAME padding, and
# outputs on either side of the rule's 2x2.
_CONV_CASES = [(9, 7, 2, 3, 8), (8, 7, 2, 3, 8), (1, 3, 1, 8, 8), (2, 3, 1, 8, 8), (3, 3, 1, 8, 8),
               (2, 3, 2, 8, 16), (3, 3, 2, 8, 16), (4, 3, 2, 8, 16), (5, 3, 2, 8, 16),
               (1, 1, 2, 8, 16), (4, 1, 1, 16, 8), (4, 1, 2, 8, 16), (5, 1, 2, 8, 16)]


@pytest.mark.parametrize("size,kernel,stride,cin,cout", _CONV_CASES)
def test_matmul_conv_equals_lax_conv(size, kernel, stride, cin, cout):
  rng = np.random.default_rng(size + 10 * kernel + 100 * stride)
  x = rng.normal(size=(3, size, size + 1, cin)).astype(np.float32)
  w = rng.normal(size=(kernel, kernel, cin, cout)).astype(np.float32)

  def values_and_grads(conv2d):
    loss = lambda x, w: jnp.sum(jnp.sin(conv2d(x, w, stride)))
    return conv2d(x, w, stride), jax.grad(loss, (0, 1))(x, w)

  jitted = jax.jit(values_and_grads, static_argnums=0)  # One compile, not 49.
  got, want = jitted(cpu_speed.matmul_conv2d), jitted(cpu_speed.lax_conv2d)
  assert got[0].shape == want[0].shape
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-4), got, want)


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 3), height=st.integers(1, 9), extra_width=st.integers(0, 2),
       kernel=st.sampled_from([1, 3, 5, 7]), stride=st.sampled_from([1, 2]), cin=st.integers(1, 6),
       cout=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_matmul_conv_equals_lax_conv_on_any_shape(batch, height, extra_width, kernel, stride, cin,
                                                  cout, seed):
  """Beyond the ResNet's shapes: SAME padding of any kernel, odd sizes, 1-pixel inputs."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(batch, height, height + extra_width, cin)).astype(np.float32)
  w = rng.normal(size=(kernel, kernel, cin, cout)).astype(np.float32)
  got, want = cpu_speed.matmul_conv2d(x, w, stride), cpu_speed.lax_conv2d(x, w, stride)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_conv_lowering_rule(monkeypatch):
  rule = lambda x, k, s: cpu_speed.use_matmul(x, (k, k, x[-1], 8), s)
  assert jax.default_backend() == "cpu"
  assert rule((64, 56, 56, 64), 1, 1) and rule((64, 8, 8, 256), 1, 2)
  assert rule((64, 2, 2, 512), 3, 1) and rule((64, 4, 3, 256), 3, 2)
  assert not rule((64, 3, 2, 512), 3, 1) and not rule((64, 5, 4, 256), 3, 2)
  assert not rule((64, 64, 64, 3), 7, 2)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert not rule((64, 2, 2, 512), 3, 1) and not rule((64, 8, 8, 64), 1, 1)


def test_resnet_same_with_and_without_matmul_convs(monkeypatch):
  # 36 px: stages of 9, 5, 3 and 2 px, so the rule picks both lowerings.
  f = _resnet(depth=10, width=0.25, zero_init_last_norm=False)
  x = jax.random.normal(_RNG, (2, 36, 36, 3))
  params, state = f.init(_RNG, x, True)
  params = _random_params(params)
  loss = lambda p: jnp.sum(jnp.sin(f.apply(p, state, None, x, True)[0]))
  rule, decisions = cpu_speed.use_matmul, []

  def recorded_rule(*args):
    decisions.append(rule(*args))
    return decisions[-1]

  monkeypatch.setattr(cpu_speed, "use_matmul", lambda *_: False)
  want = jax.jit(jax.value_and_grad(loss))(params)
  monkeypatch.setattr(cpu_speed, "use_matmul", recorded_rule)
  got = jax.jit(jax.value_and_grad(loss))(params)
  # ResNet-10's 13 convs (the stem, 2 in each of 4 blocks, 4 projection shortcuts), both lowerings.
  assert len(decisions) == 13 and 0 < sum(decisions) < 13
  # Float error only, relative to each leaf's scale: BN over 8 values in the
  # last stage turns a few of its smallest gradients into noise.
  jax.tree.map(
      lambda got, want: np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max(
      )), got, want)


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_layers_reproduce_haiku_layers_exactly(kind, monkeypatch):
  monkeypatch.setattr(cpu_speed, "use_matmul", lambda *_: False)  # lax.conv.
  if kind == "conv":
    layers = (lambda x: nets.Conv2D(6, kernel_shape=3, stride=2)
              (x), lambda x: hk.Conv2D(6, kernel_shape=3, stride=2)(x))
    x = np.random.default_rng(0).normal(size=(2, 7, 6, 4)).astype(np.float32)
  else:
    layers = (lambda x: nets.Linear(6)(x), lambda x: hk.Linear(6)(x))
    x = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32)
  ours, haiku = (hk.without_apply_rng(hk.transform(f)) for f in layers)
  params = ours.init(_RNG, x)
  # Same names, shapes and initial values (checkpoints stay compatible).
  jax.tree.map(np.testing.assert_array_equal, params, haiku.init(_RNG, x))
  params = _random_params(params)  # A nonzero bias.
  np.testing.assert_array_equal(ours.apply(params, x), haiku.apply(params, x))


# Mixed precision: float32 parameters, compute in the input dtype.

_F32_MODULES = {
    "BatchNorm", "_StopGradientBatchNorm", "ExponentialMovingAverage", "_GroupNorm", "_Affine"
}


@pytest.mark.parametrize("norm,ws", [(n, False) for n in _ALL_NORMS] + [("gn", True)])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_layers_compute_in_input_dtype_on_float32_params(norm, ws, dtype):
  calls = []

  def record(next_f, args, kwargs, context):
    out = next_f(*args, **kwargs)
    if context.method_name == "__call__":
      calls.append((type(context.module).__name__, args[0].dtype, out.dtype))
    return out

  def forward(x, is_training):
    with hk.intercept_methods(record):
      features = nets.ResNet(depth=18, norm=norm, weight_standardization=ws,
                             gn_groups=4)(x, is_training)
      return nets.MLP(16, 8, norm=norm, weight_standardization=ws, gn_groups=4)(features,
                                                                                is_training)

  f = hk.transform_with_state(forward)
  x = jnp.zeros(_IMAGES, dtype)
  params, state = jax.eval_shape(lambda x: f.init(_RNG, x, True), x)
  leaves = jax.tree.leaves((params, state))  # BN's EMA counters are int32.
  assert {v.dtype for v in leaves if v.dtype != jnp.int32} == {jnp.dtype(jnp.float32)}
  calls.clear()
  apply_fn = lambda p, s: f.apply(p, s, None, x, True)[0]
  assert jax.eval_shape(apply_fn, params, state).dtype == dtype
  names = {name for name, *_ in calls}
  assert {"Conv2D", "Linear"} <= {n.removeprefix("WS") for n in names}
  assert bool(names & _F32_MODULES) == (norm != "none")
  for name, dtype_in, dtype_out in calls:  # Norms in float32, the rest not.
    want = jnp.float32 if name in _F32_MODULES else dtype
    assert dtype_in == dtype_out == want, name
  loss = lambda p, s: jnp.sum(apply_fn(p, s))
  grads = jax.eval_shape(jax.grad(loss), params, state)
  assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("norm,ws", [("bn", False), ("gn", True), ("none", False)])
def test_bfloat16_resnet_close_to_float32(norm, ws):
  f = _resnet(depth=18, width=0.25, stem="cifar", norm=norm, weight_standardization=ws, gn_groups=4,
              zero_init_last_norm=False)
  x = jax.random.normal(_RNG, (4, 32, 32, 3))
  params, state = f.init(_RNG, x, True)
  params = _random_params(params)
  apply_fn = jax.jit(lambda p, x: f.apply(p, state, None, x, True)[0])
  want, got = apply_fn(params, x), apply_fn(params, x.astype(jnp.bfloat16))
  assert got.dtype == jnp.bfloat16
  error = np.linalg.norm(np.float32(got) - want) / np.linalg.norm(want)
  # Measured 0.3% (none) to 1.1% (bn, gn+ws): bf16 rounds every layer's
  # inputs and weights by up to 2^-9, and 20 layers accumulate it.
  assert error < 0.03


def test_identity_blocks_at_32px_see_only_the_top_left_corner():
  # Why bn_stats' step-0 encoder is at chance on shapes10 (git log): with each block's
  # last scale at 0 the blocks are the identity, and the stride-2 shortcuts keep position (0, 0).
  f = _resnet(depth=18, width=0.25, norm="affine", zero_init_last_norm=True)
  x = jax.random.normal(_RNG, (2, 32, 32, 3))
  params, state = f.init(_RNG, x, True)
  embed = lambda images: f.apply(params, state, None, images, False)[0]
  outside = x.at[:, 9:].set(5.).at[:, :, 9:].set(5.)
  np.testing.assert_array_equal(embed(x), embed(outside))
  inside = x.at[:, 4, 4].set(5.)
  assert np.abs(embed(inside) - embed(x)).max() > 1e-3
