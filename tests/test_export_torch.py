"""Tests for byol_jax.export_torch: PyTorch gives the exported encoder's features, loaded strictly.

Each encoder has every norm parameter and BN moving average drawn at random, so a mislaid key, a
transposed kernel or a wrong eps shows in the features. CI installs PyTorch (the `torch` extra),
and there a missing torch fails instead of skipping.
"""
import importlib
import inspect
import os
import subprocess
import sys

import haiku as hk
import jax
from jax import lax
import numpy as np
import pytest

from byol_jax import export
from byol_jax import export_torch
from byol_jax import model
from byol_jax.data import augment
from byol_jax.nets import layers
from byol_jax.nets import resnet
from train_helpers import small_config

torch = importlib.import_module("torch") if os.environ.get("CI") else pytest.importorskip("torch")
torch_resnet = importlib.import_module("byol_jax.torch_resnet")

# float32 on both sides; what is left is the order of sums in convs and norms.
_RELATIVE_BOUND = 1e-5


def _save_random_encoder(directory, **overrides):
  """Saves a ResNet-10 x0.25 (32 px) whose norm parameters and BN statistics are random."""
  overrides = {"stem": "imagenet", "image_size": 32, "compute_dtype": "float32", **overrides}
  if overrides.get("init") != "bn_stats":
    overrides.setdefault("bn_cross_replica", False)  # init outside pmap.
  config = small_config(**overrides)
  encoder = hk.transform_with_state(model.encoder_fn(config))
  shape = (1, config.image_size, config.image_size, 3)
  params, state = encoder.init(jax.random.PRNGKey(0), np.zeros(shape, np.float32), True)
  rng = np.random.default_rng(1)

  def draw(name, value):
    if name == "scale":
      return rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
    if name == "offset":
      return rng.normal(0.0, 0.2, value.shape).astype(np.float32)
    return np.asarray(value)

  params = {m: {n: draw(n, v) for n, v in leaves.items()} for m, leaves in params.items()}
  for module, leaves in state.items():
    low, high = (0.5, 2.0) if module.endswith("var_ema") else (-0.3, 0.3)
    leaves["average"] = rng.uniform(low, high, leaves["average"].shape).astype(np.float32)
    leaves["counter"] = np.asarray(7, np.int32)
  export.save_encoder(directory, config, params, state)
  return config


def _images(size, count=4):
  return np.random.default_rng(2).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def _torch_features(path, images):
  encoder = torch_resnet.load(path)
  with torch.no_grad():
    return encoder(torch_resnet.normalize(torch.from_numpy(images))).numpy()


@pytest.mark.parametrize(
    "overrides", [
        dict(norm="bn"),
        dict(norm="bn_stopgrad"),
        dict(norm="gn", gn_groups=4, weight_standardization=True),
        dict(norm="ln"),
        dict(norm="none"),
        dict(norm="none", init="bn_stats"),
        dict(norm="gn", gn_groups=4, weight_standardization=True, stem="cifar", image_size=16),
        dict(norm="bn", depth=50),
    ], ids=["bn", "bn_stopgrad", "gn_ws", "ln", "none", "bn_stats", "gn_ws_cifar", "bn_resnet50"])
def test_torch_features_equal_the_exported_encoder_s(tmp_path, overrides):
  config = _save_random_encoder(tmp_path / "encoder", **overrides)
  export_torch.export_encoder(tmp_path / "encoder", tmp_path / "encoder.pt")
  images = _images(config.image_size)
  expected = np.asarray(export.load_encoder(tmp_path / "encoder")(images))
  features = _torch_features(tmp_path / "encoder.pt", images)
  assert features.shape == expected.shape == (len(images), model.embedding_size(config))
  error = np.max(np.abs(features - expected)) / np.max(np.abs(expected))
  assert error < _RELATIVE_BOUND, (error, overrides)


def test_the_torch_module_restates_the_jax_facts_it_cannot_import():
  """torch_resnet needs only torch, so it repeats the depths, eps and image statistics: the same."""
  assert torch_resnet.DEPTHS == resnet._DEPTHS  # pylint: disable=protected-access
  assert torch_resnet.STEMS == resnet.STEMS
  assert torch_resnet.WS_EPS == inspect.signature(
      layers.standardize_weight).parameters["eps"].default
  assert torch_resnet.NORM_EPS == inspect.signature(layers.make_norm).parameters["eps"].default
  assert (torch_resnet.IMAGENET_MEAN, torch_resnet.IMAGENET_STD) == (augment.IMAGENET_MEAN,
                                                                     augment.IMAGENET_STD)


def test_same_padding_is_lax_s():
  for size in range(1, 12):
    for kernel in (1, 3, 7):
      for stride in (1, 2):
        [expected] = lax.padtype_to_pads((size,), (kernel,), (stride,), "SAME")
        assert torch_resnet.same_padding(size, kernel, stride) == tuple(expected)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A BN ResNet-10's export and its PyTorch file."""
  directory = tmp_path_factory.mktemp("export")
  _save_random_encoder(directory / "encoder", norm="bn")
  export_torch.export_encoder(directory / "encoder", directory / "encoder.pt")
  return directory


def test_state_dict_has_torchvision_s_bn_keys(saved):
  state_dict = torch.load(saved / "encoder.pt", weights_only=True)["state_dict"]
  bn = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
  assert {k.rpartition(".")[2] for k in state_dict if k.startswith("bn1.")} == bn
  assert state_dict["conv1.weight"].shape == (16, 3, 7, 7)  # OIHW, width 0.25.
  assert state_dict["layer2.0.downsample.0.weight"].shape == (32, 16, 1, 1)
  assert int(state_dict["layer4.0.bn2.num_batches_tracked"]) == 7


def test_load_is_strict(saved):
  saved_file = torch.load(saved / "encoder.pt", weights_only=True)
  encoder = torch_resnet.from_config(saved_file["config"])
  missing = dict(saved_file["state_dict"])
  del missing["layer3.0.bn2.running_var"]
  with pytest.raises(RuntimeError, match=r"Missing key\(s\).*layer3\.0\.bn2\.running_var"):
    encoder.load_state_dict(missing)
  wrong_shape = dict(saved_file["state_dict"])
  wrong_shape["layer1.0.conv1.weight"] = wrong_shape["layer1.0.conv1.weight"][:, :8]
  with pytest.raises(RuntimeError, match=r"size mismatch for layer1\.0\.conv1\.weight"):
    encoder.load_state_dict(wrong_shape)
  extra = dict(saved_file["state_dict"], **{"fc.weight": torch.zeros(10, 128)})
  with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*fc\.weight"):
    encoder.load_state_dict(extra)


def test_an_export_with_an_unknown_array_is_refused(saved):
  arch, params, state = export.read_encoder(saved / "encoder")
  params["encoder/~/stage1_block0/~/conv_0"]["b"] = np.zeros(16, np.float32)
  with pytest.raises(export_torch.ExportError, match=r"stage1_block0/~/conv_0\|b"):
    export_torch.convert(params, state, bottleneck=False)
  params = {k: v for k, v in params.items() if k != "encoder/~/stage1_block0/~/conv_0"}
  with pytest.raises(export_torch.ExportError, match=r"Missing key.*layer1\.0\.conv1\.weight"):
    export_torch.to_torch(arch, params, state)


def test_command_writes_the_file_or_fails_in_one_line(saved, tmp_path):
  command = [sys.executable, "-m", "byol_jax.export_torch", f"--encoder_dir={saved / 'encoder'}"]
  done = subprocess.run(command + [f"--output={tmp_path / 'out.pt'}"], capture_output=True,
                        text=True, check=False)
  assert done.returncode == 0, done.stderr
  assert "Wrote" in done.stdout and (tmp_path / "out.pt").exists()
  done = subprocess.run([
      sys.executable, "-m", "byol_jax.export_torch", f"--encoder_dir={tmp_path / 'absent'}",
      f"--output={tmp_path / 'x.pt'}"
  ], capture_output=True, text=True, check=False)
  assert done.returncode == 1
  assert "FileNotFoundError: No exported encoder at" in done.stderr
  assert "Traceback" not in done.stderr
