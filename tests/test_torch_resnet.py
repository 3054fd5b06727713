"""Tests for byol_jax.torch_resnet against torchvision (skipped where torchvision is absent).

torchvision's wheels import only beside the torch build they were made for, which CI does not
install (its torch is the CPU build); these run where both import. test_export_torch.py checks
torch_resnet against the JAX encoder; this file checks the other side: that a BN ResNet-50's state
dict loads strictly into torchvision's, and where the two compute the same function.
"""
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from byol_jax import torch_resnet  # pylint: disable=wrong-import-position


def _randomize_bn(model):
  generator = torch.Generator().manual_seed(0)
  for module in model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      for tensor, (low, high) in ((module.weight, (0.5, 1.5)), (module.bias, (-0.2, 0.2)),
                                  (module.running_mean, (-0.3, 0.3)), (module.running_var, (0.5,
                                                                                            2.0))):
        with torch.no_grad():
          tensor.uniform_(low, high, generator=generator)
  return model


def _relative_difference(a, b, size):
  images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    x, y = a(images), b(images)
  return float((x - y).abs().max() / y.abs().max())


@pytest.fixture(scope="module")
def pair():
  ours = _randomize_bn(torch_resnet.ResNet(depth=50, norm="bn")).eval()
  theirs = torchvision.models.resnet50()
  theirs.fc = torch.nn.Identity()
  theirs.load_state_dict(ours.state_dict(), strict=True)  # Every key and shape.
  return ours, theirs.eval()


def test_bn_resnet50_matches_torchvision_where_same_padding_is_symmetric(pair):
  # At 33 and 225 px every stride-2 layer sees an odd size, where SAME pads both sides equally.
  for size in (33, 225):
    assert _relative_difference(*pair, size) < 1e-5


def test_torchvision_differs_at_even_sizes(pair):
  # SAME puts the odd padding pixel after; torchvision pads symmetrically.
  for size in (32, 224):
    assert _relative_difference(*pair, size) > 1e-3


def test_resnet18_has_the_projection_shortcut_torchvision_lacks():
  theirs = torchvision.models.resnet18()
  theirs.fc = torch.nn.Identity()
  result = theirs.load_state_dict(
      torch_resnet.ResNet(depth=18, norm="bn").state_dict(), strict=False)
  assert not result.missing_keys
  assert {k.rpartition(".")[0] for k in result.unexpected_keys
         } == {"layer1.0.downsample.0", "layer1.0.downsample.1"}
