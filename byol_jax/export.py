"""The trained encoder on its own: save it after pretraining, load it to embed images.

An export is a directory with `encoder.npz` (the online encoder's parameters and BN state, keys
"<module path>|<param name>") and `config.json` (the architecture and the compute dtype), so it
loads without the training checkpoint, the optimizer or the heads. The loaded encoder computes in
the dtype it was trained in (bfloat16 activations for the full-size configs), so it gives the
features the run's own evaluation measured:

    from byol_jax import export
    embed = export.load_encoder("WORKDIR/encoder")
    features = embed(images)  # uint8 [B, H, W, 3] -> float32 [B, D]
"""
import io
import json

from etils import epath
import ml_collections
import numpy as np

from byol_jax import files
from byol_jax import model

# What an export keeps of its run's config: the encoder's keys, and where its data came from.
_CONFIG_KEYS = model.ENCODER_KEYS + ("image_size", "dataset")
_PARAMS, _STATE = "params", "state"


def _flatten(kind, tree):
  return {
      f"{kind}|{module}|{name}": np.asarray(value) for module, leaves in tree.items()
      for name, value in leaves.items()
  }


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
  arrays = {
      **_flatten(_PARAMS, model.encoder_only(params)), **_flatten(_STATE, model.encoder_only(state))
  }
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  files.write_atomically(directory / "encoder.npz", buffer.getvalue())
  files.write_atomically(directory / "config.json",
                         json.dumps({k: config[k] for k in _CONFIG_KEYS}, indent=2))


def read_encoder(directory):
  """(architecture config, params, state) of an export, as numpy arrays; for converters too."""
  path = epath.Path(directory) / "encoder.npz"
  if not path.exists():
    raise FileNotFoundError(f"No exported encoder at {path}; a finished training run writes one "
                            "to WORKDIR/encoder.")
  arch = json.loads((path.parent / "config.json").read_text())
  missing = [k for k in _CONFIG_KEYS if k not in arch]
  if missing:
    raise ValueError(
        f"{path.parent}/config.json lacks {missing}: it was written by an older "
        "byol_jax. Fix: export again from the run's last checkpoint with this version.")
  arch = ml_collections.ConfigDict(arch)
  with np.load(io.BytesIO(path.read_bytes())) as data:
    arrays = dict(data)
  return arch, _unflatten(arrays, _PARAMS), _unflatten(arrays, _STATE)


def load_encoder(directory):
  """Returns a jitted embed(images uint8 [B, H, W, 3]) -> [B, D] of the exported encoder."""
  return model.make_embed_fn(*read_encoder(directory))
