"""Networks of byol_jax: the encoder, the MLP heads and their norms.

All are Haiku modules (build them inside hk.transform_with_state) called as
`module(x, is_training)` on channels-last float inputs.

- `ResNet(depth, width, stem, norm, weight_standardization, ...)`: ResNet v1
  (10, 18, 34, 50, 101, 152, 200; 10 for tests) returning the pooled embedding, of width
  `embedding_size(depth, width)`. `stem="cifar"` is a 3x3/1 conv without max-pool.
- `MLP(hidden_size, output_size, norm, weight_standardization, ...)`: the
  projector / predictor, Linear -> norm -> ReLU -> Linear (no bias).
- `make_norm(kind, name=...)`: `norm(x, is_training)` for kind in
  `NORMS = ("bn", "ln", "gn", "none", "bn_stopgrad")` or "affine" (per-channel
  trainable scale and offset, no statistics: the network of the modified
  init). Every kind with parameters makes one module called `name` holding
  exactly "scale" and "offset", so a layer's path does not depend on the kind.
  Shapes: (C,) for ln/gn/affine/bn_stopgrad; hk.BatchNorm's broadcast shape
  (1, ..., 1, C) for bn. The moving averages of both BNs are in the state under
  `<path>/~/mean_ema` and `var_ema`.
- `is_last_block_norm(path)`: whether a params key is the last norm of a
  residual block's main path (`.../stage{s}_block{b}/~/last_norm`), the one
  initialised with scale 0.
- `Conv2D`, `Linear`: hk.Conv2D (NHWC, SAME) / hk.Linear with the same
  parameters, init and names, but float32 parameters used in the input's
  dtype; Conv2D lowers to matmuls where XLA:CPU convolutions are slow.
- `standardize_weight`, `WSConv2D`, `WSLinear`: weight standardization per
  output unit over the fan-in (eps 1e-4), same parameters as Conv2D / Linear.

Mixed precision: every module computes in its input's dtype, norms in float32,
and every parameter and state is float32; float32 inputs give float32 results
as before, bf16 inputs (cast by the caller) give a bf16 network.
"""
from byol_jax.nets.layers import Conv2D
from byol_jax.nets.layers import Linear
from byol_jax.nets.layers import make_norm
from byol_jax.nets.layers import NORMS
from byol_jax.nets.layers import standardize_weight
from byol_jax.nets.layers import WSConv2D
from byol_jax.nets.layers import WSLinear
from byol_jax.nets.mlp import MLP
from byol_jax.nets.resnet import embedding_size
from byol_jax.nets.resnet import is_last_block_norm
from byol_jax.nets.resnet import ResNet
from byol_jax.nets.resnet import STEMS

__all__ = (
    "Conv2D",
    "Linear",
    "MLP",
    "NORMS",
    "ResNet",
    "STEMS",
    "WSConv2D",
    "WSLinear",
    "embedding_size",
    "is_last_block_norm",
    "make_norm",
    "standardize_weight",
)
