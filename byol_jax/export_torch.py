r"""Entry point: an exported encoder (WORKDIR/encoder) as PyTorch weights.

    python -m byol_jax.export_torch --encoder_dir=WORKDIR/encoder --output=encoder.pt

The file holds {"config": the arguments of torch_resnet.ResNet, "state_dict": its weights}, tensors
and plain values only (torch.load(..., weights_only=True) reads it), and
`byol_jax.torch_resnet.load(path)` rebuilds the encoder from it; that module needs only torch.
Keys are torchvision's; see torch_resnet for what matches torchvision and what does not (padding).
Needs PyTorch: pip install -e ".[torch]".
"""
import io
import re
import sys

from absl import app
from absl import flags
from etils import epath
import numpy as np

from byol_jax import export
from byol_jax import files

_ENCODER_DIR = flags.DEFINE_string("encoder_dir", None, "An exported encoder: WORKDIR/encoder.")
_OUTPUT = flags.DEFINE_string("output", None, "The PyTorch file to write, e.g. encoder.pt.")

# Our norm kinds (config.norm, or init=bn_stats) -> torch_resnet's. bn_stopgrad evaluates as bn.
_NORMS = {"bn": "bn", "bn_stopgrad": "bn", "gn": "gn", "ln": "ln", "none": "none"}
_BLOCK = re.compile(r"^encoder/~/stage(\d+)_block(\d+)/~/(\w+)$")
_LAYER = re.compile(r"^(conv|norm)_(\d+)$")
# Haiku's BN keeps its moving averages in these modules under the norm, the value in "average".
_EMAS = {"mean_ema": "running_mean", "var_ema": "running_var"}


class ExportError(Exception):
  """An export that cannot be converted; the message names what and why."""


def torch_config(arch) -> dict:
  """The keyword arguments of torch_resnet.ResNet for an export's architecture config."""
  norm = "affine" if arch.init == "bn_stats" else _NORMS.get(arch.norm)
  if norm is None:
    raise ExportError(f"config.norm={arch.norm!r} has no PyTorch counterpart; convertible norms "
                      f"are {', '.join(map(repr, _NORMS))} and init='bn_stats'.")
  return dict(depth=int(arch.depth), width=float(arch.width), stem=str(arch.stem), norm=norm,
              weight_standardization=bool(arch.weight_standardization),
              gn_groups=int(arch.gn_groups))


def _torch_name(module, bottleneck):
  """torchvision's name of one of our encoder's conv or norm modules."""
  if module == "encoder/~/stem_conv":
    return "conv1"
  if module == "encoder/~/stem_norm":
    return "bn1"
  match = _BLOCK.match(module)
  if not match:
    raise ExportError(f"Unknown encoder module {module!r} in the export.")
  stage, block, layer = match.groups()
  prefix = f"layer{stage}.{block}."
  if layer in ("shortcut_conv", "shortcut_norm"):
    return prefix + ("downsample.0" if layer == "shortcut_conv" else "downsample.1")
  if layer == "last_norm":
    return prefix + ("bn3" if bottleneck else "bn2")
  layer_match = _LAYER.match(layer)
  if not layer_match:
    raise ExportError(f"Unknown encoder module {module!r} in the export.")
  kind, index = layer_match.groups()
  return prefix + ("conv" if kind == "conv" else "bn") + str(int(index) + 1)


def convert(params, state, bottleneck):
  """A torchvision-named state dict (numpy arrays) of our encoder's params and BN state.

  Every array of the export is used exactly once, or this raises ExportError naming the key.
  """
  converted = {}

  def put(key, value):
    if key in converted:
      raise ExportError(f"Two arrays of the export map to the PyTorch key {key!r}.")
    converted[key] = value

  for module, leaves in params.items():
    name = _torch_name(module, bottleneck)
    for leaf, value in leaves.items():
      value = np.asarray(value, np.float32)
      if leaf == "w" and value.ndim == 4:
        put(f"{name}.weight", np.ascontiguousarray(value.transpose(3, 2, 0, 1)))  # HWIO -> OIHW
      elif leaf in ("scale", "offset"):
        put(f"{name}.{'weight' if leaf == 'scale' else 'bias'}", value.reshape(-1))
      else:
        raise ExportError(f"Unexpected parameter {module}|{leaf} {value.shape} in the export.")
  for module, leaves in state.items():
    norm, _, ema = module.rpartition("/~/")
    if ema not in _EMAS:
      raise ExportError(f"Unexpected state module {module!r} in the export.")
    name = _torch_name(norm, bottleneck)
    put(f"{name}.{_EMAS[ema]}", np.asarray(leaves["average"], np.float32).reshape(-1))
    if ema == "mean_ema":
      put(f"{name}.num_batches_tracked", np.asarray(leaves["counter"], np.int64).reshape(()))
  return converted


def _import_torch():
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise ExportError('PyTorch is not installed; install it with pip install -e ".[torch]" '
                      f"({error}).") from error
  return torch


def to_torch(arch, params, state):
  """(torch_resnet.ResNet's arguments, its state dict) of an export, checked to load strictly."""
  torch = _import_torch()
  from byol_jax import torch_resnet  # pylint: disable=import-outside-toplevel

  config = torch_config(arch)
  arrays = convert(params, state, torch_resnet.DEPTHS[config["depth"]][0])
  state_dict = {key: torch.from_numpy(value) for key, value in arrays.items()}
  try:
    torch_resnet.from_config(config).load_state_dict(state_dict, strict=True)
  except RuntimeError as error:
    raise ExportError(f"The exported weights do not fit torch_resnet.ResNet(**{config}): "
                      f"{error}") from error
  return config, state_dict


def export_encoder(encoder_dir, output):
  """Converts the export at `encoder_dir` and writes it to `output` (local or GCS)."""
  config, state_dict = to_torch(*export.read_encoder(encoder_dir))
  buffer = io.BytesIO()
  _import_torch().save({"config": config, "state_dict": state_dict}, buffer)
  files.write_atomically(epath.Path(output), buffer.getvalue())
  return config


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    config = export_encoder(_ENCODER_DIR.value, _OUTPUT.value)
  except (ExportError, FileNotFoundError) as error:
    sys.exit(f"{type(error).__name__}: {error}")
  print(f"Wrote {_OUTPUT.value}: torch_resnet.ResNet(**{config})", flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["encoder_dir", "output"])
  app.run(main)
