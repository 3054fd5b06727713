"""The trained encoder on its own: save it after pretraining, load it to embed images.

An export is a directory with `encoder.npz` (the online encoder's parameters and BN state, keys
"<module path>|<param name>") and `config.json` (the architecture and the compute dtype), so it
loads without the training checkpoint, the optimizer or the heads. The loaded encoder computes in
the dtype it was trained in (bfloat16 activations for the full-size configs), so it gives the
features the run's own evaluation measured; exports without a compute dtype run in float32:

    from byol_jax import export
    embed = export.load_encoder("WORKDIR/encoder")
    features = embed(images)  # uint8 [B, H, W, 3] -> float32 [B, D]
"""
import io
import json

from etils import epath
import haiku as hk
import jax.numpy as jnp
import ml_collections
import numpy as np

from byol_jax import compile_options
from byol_jax import files
from byol_jax import nets
from byol_jax.data import augment

_ARCH_KEYS = ("depth", "width", "stem", "norm", "weight_standardization", "gn_groups", "init",
              "image_size", "dataset", "compute_dtype")
_PARAMS, _STATE = "params", "state"


def _encoder_only(tree):
  return {k: v for k, v in tree.items() if k.split("/")[0] == "encoder"}


def _flatten(kind, tree):
  return {f"{kind}|{module}|{name}": np.asarray(value)
          for module, leaves in tree.items() for name, value in leaves.items()}


def _unflatten(arrays, kind):
  tree = {}
  for key, value in arrays.items():
    prefix, module, name = key.split("|")
    if prefix == kind:
      tree.setdefault(module, {})[name] = value
  return tree


def save_encoder(directory, config, params, state):
  """Writes the encoder part of (params, state) and the architecture config to `directory`.

  `directory` may be local or on GCS (etils.epath). Each file is replaced atomically, so a kill
  leaves every file either as before or as new.
  """
  directory = epath.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  arrays = {**_flatten(_PARAMS, _encoder_only(params)), **_flatten(_STATE, _encoder_only(state))}
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  files.write_atomically(directory / "encoder.npz", buffer.getvalue())
  files.write_atomically(directory / "config.json",
                         json.dumps({k: config[k] for k in _ARCH_KEYS}, indent=2))


def encoder_norm(arch):
  """The norm kind the encoder was trained with (`affine` after the modified init)."""
  return "affine" if arch["init"] == "bn_stats" else arch["norm"]


def load_encoder(directory):
  """Returns a jitted embed(images uint8 [B, H, W, 3]) -> [B, D] of the exported encoder."""
  path = epath.Path(directory) / "encoder.npz"
  if not path.exists():
    raise FileNotFoundError(f"No exported encoder at {path}; a finished training run writes one "
                            "to WORKDIR/encoder.")
  arch = ml_collections.ConfigDict(json.loads((path.parent / "config.json").read_text()))
  with np.load(io.BytesIO(path.read_bytes())) as data:
    arrays = dict(data)
  params, state = _unflatten(arrays, _PARAMS), _unflatten(arrays, _STATE)

  def forward(images):
    return nets.ResNet(depth=arch.depth, width=arch.width, stem=arch.stem,
                       norm=encoder_norm(arch), weight_standardization=arch.weight_standardization,
                       gn_groups=arch.gn_groups, name="encoder")(images, is_training=False)

  network = hk.without_apply_rng(hk.transform_with_state(forward))
  compute_dtype = jnp.dtype(arch.get("compute_dtype", "float32"))

  def embed(images):  # As train.network_fn computes: activations in compute_dtype.
    features, _ = network.apply(params, state, augment.normalize(images).astype(compute_dtype))
    return features.astype(jnp.float32)

  return compile_options.jit(embed)
