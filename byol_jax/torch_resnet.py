"""byol_jax's ResNet encoder in PyTorch, for the weights `byol_jax.export_torch` writes.

This file needs only torch (no JAX, no byol_jax): copy it next to your code. It builds the network
of an exported encoder and computes the same features as `byol_jax.export.load_encoder` in float32:

    import torch
    import torch_resnet  # or: from byol_jax import torch_resnet
    encoder = torch_resnet.load("encoder.pt")  # strict: every key, every shape
    features = encoder(torch_resnet.normalize(images))  # uint8 [B, H, W, 3] -> float32 [B, D]

Keys follow torchvision's ResNet (conv1, bn1, layer1.0.conv1, layer1.0.downsample.0, ...), and with
BN the state dict carries the moving averages as running_mean / running_var. A ResNet-50/101/152
with BN, width 1 and the imagenet stem so loads strictly into `torchvision.models.resnet50()` whose
`fc` is `torch.nn.Identity()`. ResNet-18/34 do not: like the official BYOL code, every stage's first
block has a projection shortcut, layer1.0.downsample included, which torchvision's lack.

Padding: JAX's SAME padding puts the odd pixel of a stride-2 conv's or the max-pool's padding at the
bottom and right; torchvision pads both sides equally. This module pads as SAME does (F.pad before
each layer), so it reproduces our features. Plain torchvision with these weights computes a
different function, except where every stride-2 layer sees an odd size (e.g. 225 px, where SAME is
symmetric); at 224 px it is shifted by a pixel at each stride-2 layer, which costs accuracy.

The other conventions kept: weight standardization's eps 1e-4 on the variance over each kernel's
fan-in (biased variance); BN, GN and LN eps 1e-5; GN statistics per sample over (C / G, H, W), LN
being GN with one group; `affine` (the modified init, init=bn_stats) a per-channel scale and offset
with no statistics. Everything computes in float32; an encoder trained in bfloat16 gives features
within bfloat16 rounding of the JAX ones. BN momentum is 0.1, the same update as our decay 0.9, but
a fine-tuning torch BN updates running_var with the unbiased batch variance where Haiku's is biased.
"""
import torch
from torch import nn
import torch.nn.functional as F

# depth -> (bottleneck?, blocks per stage), as byol_jax.nets.resnet.
DEPTHS = {
    10: (False, (1, 1, 1, 1)),
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
    200: (True, (3, 24, 36, 3)),
}
STEMS = ("imagenet", "cifar")
# bn: moving averages; gn / ln: per-sample groups; affine: init=bn_stats's scale and offset.
NORMS = ("bn", "gn", "ln", "none", "affine")
NORM_EPS = 1e-5
WS_EPS = 1e-4
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_STAGE_CHANNELS = (64, 128, 256, 512)
_EXPANSION = 4


def normalize(images: torch.Tensor) -> torch.Tensor:
  """uint8 [B, H, W, 3] to float32 [B, 3, H, W] standardized as load_encoder's input."""
  x = images.to(torch.float32) / 255.0
  x = (x - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
  return x.permute(0, 3, 1, 2).contiguous()


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """(before, after) padding of one spatial axis under JAX's SAME: the odd pixel goes after."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
  top, bottom = same_padding(x.shape[2], kernel, stride)
  left, right = same_padding(x.shape[3], kernel, stride)
  if top or bottom or left or right:
    x = F.pad(x, (left, right, top, bottom), value=value)
  return x


class Conv2d(nn.Conv2d):
  """A bias-free conv with SAME padding, optionally weight-standardized (the stored weight raw)."""

  def __init__(self, in_channels, out_channels, kernel_size, stride, weight_standardization):
    super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=False)
    self.weight_standardization = weight_standardization

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    w = self.weight
    if self.weight_standardization:
      var, mean = torch.var_mean(w, dim=(1, 2, 3), unbiased=False, keepdim=True)
      w = (w - mean) * torch.rsqrt(var + WS_EPS)
    return F.conv2d(_pad_same(x, self.kernel_size[0], self.stride[0]), w, stride=self.stride)


class Affine(nn.Module):
  """A per-channel scale (`weight`) and offset (`bias`): BN without its statistics."""

  def __init__(self, channels: int):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(channels))
    self.bias = nn.Parameter(torch.zeros(channels))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return x * self.weight[:, None, None] + self.bias[:, None, None]


def make_norm(kind: str, channels: int, gn_groups: int) -> nn.Module:
  """The norm layer of a kind in NORMS."""
  if kind == "bn":
    return nn.BatchNorm2d(channels, eps=NORM_EPS, momentum=0.1)
  if kind in ("gn", "ln"):
    groups = 1 if kind == "ln" else gn_groups
    if channels % groups:
      raise ValueError(f"gn_groups={groups} does not divide a layer's {channels} channels.")
    return nn.GroupNorm(groups, channels, eps=NORM_EPS)
  if kind == "affine":
    return Affine(channels)
  if kind == "none":
    return nn.Identity()
  raise ValueError(f"Unknown norm {kind!r}; valid choices are {', '.join(map(repr, NORMS))}.")


class Block(nn.Module):
  """A basic (3x3, 3x3) or bottleneck (1x1, 3x3 with the stride, 1x1) residual block, v1."""

  def __init__(self, in_channels, channels, stride, bottleneck, project, conv, norm):
    super().__init__()
    if bottleneck:
      specs = ((channels, 1, 1), (channels, 3, stride), (channels * _EXPANSION, 1, 1))
    else:
      specs = ((channels, 3, stride), (channels, 3, 1))
    channels_in = in_channels
    for i, (out, kernel, s) in enumerate(specs, start=1):
      setattr(self, f"conv{i}", conv(channels_in, out, kernel, s))
      setattr(self, f"bn{i}", norm(out))
      channels_in = out
    self.num_layers = len(specs)
    self.downsample = None
    if project:
      self.downsample = nn.Sequential(conv(in_channels, channels_in, 1, stride), norm(channels_in))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    shortcut = x if self.downsample is None else self.downsample(x)
    for i in range(1, self.num_layers + 1):
      x = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x))
      if i < self.num_layers:
        x = F.relu(x)
    return F.relu(x + shortcut)


class ResNet(nn.Module):
  """ResNet v1 returning the global-average-pooled embedding [B, D] of NCHW float32 images."""

  def __init__(self, depth=50, width=1.0, stem="imagenet", norm="bn", weight_standardization=False,
               gn_groups=16):
    super().__init__()
    if depth not in DEPTHS:
      raise ValueError(f"Unknown ResNet depth {depth!r}; valid depths are "
                       f"{', '.join(map(str, DEPTHS))}.")
    if stem not in STEMS:
      raise ValueError(f"Unknown stem {stem!r}; valid stems are {', '.join(map(repr, STEMS))}.")
    if norm not in NORMS:
      raise ValueError(f"Unknown norm {norm!r}; valid choices are {', '.join(map(repr, NORMS))}.")
    self.stem = stem

    def conv(cin, cout, kernel, stride):
      return Conv2d(cin, cout, kernel, stride, weight_standardization)

    def norm_layer(channels):
      return make_norm(norm, channels, gn_groups)

    stem_channels = int(64 * width)
    kernel, stride = (7, 2) if stem == "imagenet" else (3, 1)
    self.conv1 = conv(3, stem_channels, kernel, stride)
    self.bn1 = norm_layer(stem_channels)
    bottleneck, blocks_per_stage = DEPTHS[depth]
    channels_in = stem_channels
    for s, (channels, num_blocks) in enumerate(zip(_STAGE_CHANNELS, blocks_per_stage), start=1):
      channels = int(channels * width)
      blocks = []
      for b in range(num_blocks):
        # A projection shortcut on every stage's first block, as byol_jax and the official BYOL.
        blocks.append(
            Block(channels_in, channels, 2 if s > 1 and b == 0 else 1, bottleneck, b == 0, conv,
                  norm_layer))
        channels_in = channels * (_EXPANSION if bottleneck else 1)
      setattr(self, f"layer{s}", nn.Sequential(*blocks))
    self.embedding_size = channels_in

  def forward(self, images: torch.Tensor) -> torch.Tensor:
    x = F.relu(self.bn1(self.conv1(images)))
    if self.stem == "imagenet":
      x = F.max_pool2d(_pad_same(x, 3, 2, value=float("-inf")), kernel_size=3, stride=2)
    for s in range(1, 5):
      x = getattr(self, f"layer{s}")(x)
    return x.mean(dim=(2, 3))


def from_config(config: dict) -> ResNet:
  """The ResNet of the "config" entry of an export_torch file."""
  return ResNet(**config)


def load(path, map_location="cpu") -> ResNet:
  """The encoder of an export_torch file, loaded strictly, in evaluation mode."""
  saved = torch.load(path, map_location=map_location, weights_only=True)
  model = from_config(saved["config"])
  model.load_state_dict(saved["state_dict"], strict=True)
  return model.eval()
