"""ResNet v1 encoder with a swappable norm and optional weight standardization.

Module paths (the keys of the params dict) are the same for every norm kind:

  res_net/~/stem_conv, res_net/~/stem_norm
  res_net/~/stage{s}_block{b}/~/conv_{i}, .../norm_{i}   (main path)
  res_net/~/stage{s}_block{b}/~/last_norm                (before the addition)
  res_net/~/stage{s}_block{b}/~/shortcut_conv, .../shortcut_norm

with s in 1..4 and b, i counted from 0. The main path's last conv is
`conv_{n-1}`, and its norm is `last_norm` so that `is_last_block_norm` can tell
it from the path alone.
"""
import functools
import re

import haiku as hk
import jax
import jax.numpy as jnp

from byol_jax.nets import layers

# depth -> (bottleneck?, blocks per stage). 10 is not the paper's: the smallest ResNet (one block
# per stage), for tests and smoke runs.
_DEPTHS = {
    10: (False, (1, 1, 1, 1)),
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
    200: (True, (3, 24, 36, 3)),
}
DEPTHS = tuple(_DEPTHS)
STEMS = ("imagenet", "cifar")
WIDTHS = (0.25, 0.5, 1, 2, 3, 4)  # 1-4 as in BYOL; fractions for small-scale CPU work.
# Conv kernel inits: Haiku's default (truncated normal, variance 1 / fan_in), as the official BYOL
# code; or He normal on the fan-out (variance 2 / fan_out), as torchvision.
CONV_INITS = {
    "haiku": None,
    "he": hk.initializers.VarianceScaling(2.0, "fan_out", "normal"),
}
_STAGE_CHANNELS = (64, 128, 256, 512)
_BOTTLENECK_EXPANSION = 4
_LAST_BLOCK_NORM = re.compile(r"(^|/)stage\d+_block\d+/~/last_norm$")


def embedding_size(depth: int, width: float) -> int:
  """The width of the pooled embedding of ResNet(depth, width): its last stage's output."""
  bottleneck, _ = _DEPTHS[depth]
  return int(_STAGE_CHANNELS[-1] * width) * (_BOTTLENECK_EXPANSION if bottleneck else 1)


def norm_channels(depth: int, width: float) -> set[int]:
  """The channel counts of every norm layer of ResNet(depth, width), stem included."""
  bottleneck, _ = _DEPTHS[depth]
  stages = [int(c * width) for c in _STAGE_CHANNELS]
  expanded = [c * _BOTTLENECK_EXPANSION for c in stages] if bottleneck else []
  return {int(64 * width), *stages, *expanded}


def is_last_block_norm(module_path: str) -> bool:
  """Whether a params-dict key is the last norm of a residual block's main path.

  These are the norms whose scale starts at 0 (zero_init_last_norm, and
  gamma_0 = 0 in the modified init).
  """
  return bool(_LAST_BLOCK_NORM.search(module_path))


class _Block(hk.Module):
  """A basic (two 3x3) or bottleneck (1x1, 3x3, 1x1) residual block, v1."""

  def __init__(self, channels, stride, bottleneck, project, conv, norm, zero_init_last_norm, name):
    super().__init__(name=name)
    if bottleneck:
      # Stride on the 3x3 conv, as torchvision and Haiku do.
      specs = ((channels, 1, 1), (channels, 3, stride), (channels * _BOTTLENECK_EXPANSION, 1, 1))
    else:
      specs = ((channels, 3, stride), (channels, 3, 1))
    self._convs = [
        conv(c, kernel_shape=k, stride=s, name=f"conv_{i}") for i, (c, k, s) in enumerate(specs)
    ]
    self._norms = [norm(name=f"norm_{i}") for i in range(len(specs) - 1)]
    self._norms.append(norm(name="last_norm", zero_init_scale=zero_init_last_norm))
    self._shortcut = None
    if project:
      self._shortcut = (conv(specs[-1][0], kernel_shape=1, stride=stride,
                             name="shortcut_conv"), norm(name="shortcut_norm"))

  def __call__(self, x, is_training):
    shortcut = x
    if self._shortcut is not None:
      conv, norm = self._shortcut
      shortcut = norm(conv(x), is_training)
    for i, (conv, norm) in enumerate(zip(self._convs, self._norms)):
      x = norm(conv(x), is_training)
      if i < len(self._convs) - 1:
        x = jax.nn.relu(x)
    return jax.nn.relu(x + shortcut)


class ResNet(hk.Module):
  """ResNet v1 returning the global-average-pooled embedding (no head).

  Called as `resnet(images, is_training)` on float NHWC images; returns
  [B, embedding_size(depth, width)] in the images' dtype: bf16 images run it in
  bf16 on float32 parameters.
  """

  def __init__(self, depth=50, width=1, stem="imagenet", norm="bn", weight_standardization=False,
               gn_groups=16, bn_cross_replica_axis=None, bn_decay_rate=0.9, conv_init="haiku",
               zero_init_last_norm=False, remat_blocks=False, name=None):
    """Builds the network.

    Args:
      depth: one of 10, 18, 34, 50, 101, 152, 200.
      width: channel multiplier (stem included): 1 to 4 as in BYOL's wider
        encoders, or 0.25 / 0.5 for small-scale work on a CPU.
      stem: "imagenet" (7x7/2 conv, norm, relu, 3x3/2 max-pool) or "cifar"
        (3x3/1 conv, norm, relu) for small images.
      norm: a kind accepted by layers.make_norm (NORMS or "affine").
      weight_standardization: use WSConv2D for every conv.
      gn_groups: groups of "gn".
      bn_cross_replica_axis: axis name(s) for cross-replica BN statistics.
      bn_decay_rate: decay of BN's moving averages.
      conv_init: a key of CONV_INITS; "haiku" is the official BYOL code's.
      zero_init_last_norm: start each block's last norm scale at 0, so every
        block starts as the identity (Goyal et al.). The BYOL paper's results
        used scale 1 everywhere (the official README says so).
      remat_blocks: recompute each block's activations in the backward pass
        instead of keeping them (hk.remat): less memory for more FLOPs, the
        same numbers.
      name: module name.

    Raises:
      ValueError: on an unknown depth, stem, norm or conv_init, or a bad width.
    """
    super().__init__(name=name)
    if depth not in _DEPTHS:
      raise ValueError(f"Unknown ResNet depth {depth!r}; valid depths are "
                       f"{', '.join(map(str, _DEPTHS))}.")
    if stem not in STEMS:
      raise ValueError(f"Unknown ResNet stem {stem!r}; valid stems are "
                       f"{', '.join(map(repr, STEMS))}.")
    if isinstance(width, bool) or width not in WIDTHS:
      raise ValueError(f"ResNet width must be one of "
                       f"{', '.join(map(str, WIDTHS))}, got {width!r}.")
    if conv_init not in CONV_INITS:
      raise ValueError(f"Unknown conv_init {conv_init!r}; valid choices are "
                       f"{', '.join(map(repr, CONV_INITS))}.")
    conv = functools.partial(layers.WSConv2D if weight_standardization else layers.Conv2D,
                             with_bias=False, w_init=CONV_INITS[conv_init])
    norm_fn = functools.partial(layers.make_norm, norm, gn_groups=gn_groups,
                                bn_cross_replica_axis=bn_cross_replica_axis,
                                bn_decay_rate=bn_decay_rate)

    self._stem = stem
    self._remat_blocks = remat_blocks
    stem_kernel, stem_stride = (7, 2) if stem == "imagenet" else (3, 1)
    self._stem_conv = conv(int(64 * width), kernel_shape=stem_kernel, stride=stem_stride,
                           name="stem_conv")
    self._stem_norm = norm_fn(name="stem_norm")

    bottleneck, blocks_per_stage = _DEPTHS[depth]
    self._blocks = []
    for s, (channels, num_blocks) in enumerate(zip(_STAGE_CHANNELS, blocks_per_stage), start=1):
      channels = int(channels * width)
      for b in range(num_blocks):
        stride = 2 if s > 1 and b == 0 else 1
        # A projection shortcut on every stage's first block, as the official BYOL ResNets
        # (ResNet-18/34 too, where stage 1's first block would not need one).
        self._blocks.append(
            _Block(channels, stride, bottleneck, project=b == 0, conv=conv, norm=norm_fn,
                   zero_init_last_norm=zero_init_last_norm, name=f"stage{s}_block{b}"))

  def __call__(self, images: jax.Array, is_training: bool) -> jax.Array:
    x = jax.nn.relu(self._stem_norm(self._stem_conv(images), is_training))
    if self._stem == "imagenet":
      x = hk.max_pool(x, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1), padding="SAME")
    for block in self._blocks:
      x = (hk.remat(block, static_argnums=1) if self._remat_blocks else block)(x, is_training)
    return jnp.mean(x, axis=(1, 2))
