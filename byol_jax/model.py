"""The networks of a config, assembled in one place for training, the modified init, evaluation
and export.

`network_fn` is the online/target network (encoder -> projector -> predictor); `encoder_fn` is its
encoder alone, and the one embed program (`make_embed_fn`) runs only that: the evaluation of a run
and its exported encoder compute the same function with the same program. Every cross-replica
reduction inside a network (cross-replica BN) names the mapped axis `AXIS`.
"""
import functools
import json

import haiku as hk
import jax.numpy as jnp
import ml_collections

from byol_jax import cpu_speed
from byol_jax import config as config_lib
from byol_jax import nets
from byol_jax.data import augment

AXIS = "batch"
# The config keys the encoder reads: what an exported encoder keeps of its run's config.
ENCODER_KEYS = ("depth", "width", "stem", "norm", "init", "weight_standardization", "gn_groups",
                "bn_cross_replica", "conv_init", "zero_init_last_norm", "compute_dtype")


def network_norms(config, *, bn_stats_pass=False):
  """Norm kind of (encoder, projector, predictor).

  With init=bn_stats every norm is `affine` (BN's scale and offset, no statistics), and the one
  forward pass that measures the statistics runs the same network with `bn` in their place.
  """
  if config.init == "bn_stats":
    kind = _encoder_norm(config, bn_stats_pass)
    return kind, kind, kind
  return (config.norm,) + config_lib.head_norms(config)


def _encoder_norm(config, bn_stats_pass):
  """network_norms' first entry, from the encoder's own keys (all an export has)."""
  if config.init == "bn_stats":
    if bn_stats_pass:
      return "bn"
    # An export keeps no bn_stats_backward: it changes the gradient only, not the features.
    return "affine_bn_backward" if config.get("bn_stats_backward") == "bn" else "affine"
  return config.norm


def _norm_options(config, bn_stats_pass):
  return dict(
      weight_standardization=config.weight_standardization,
      gn_groups=config.gn_groups,
      bn_cross_replica_axis=AXIS if config.bn_cross_replica else None,
      # Decay 0 makes the moving averages of the statistics pass equal its batch statistics.
      bn_decay_rate=0.0 if bn_stats_pass else 0.9)


def encoder_fn(config, *, bn_stats_pass=False, remat_blocks=False):
  """(images, is_training) -> embedding, in config.compute_dtype; call inside hk.transform.

  `remat_blocks` (training only: it changes memory and FLOPs, not the function) recomputes each
  block's activations in the backward pass.
  """
  norm = _encoder_norm(config, bn_stats_pass)
  compute_dtype = jnp.dtype(config.compute_dtype)

  def encoder(images, is_training):
    # Mixed precision: the layers compute in their input's dtype on float32 params (so gradients,
    # optimizer state and the EMA stay float32).
    return nets.ResNet(
        depth=config.depth,
        width=config.width,
        stem=config.stem,
        norm=norm,
        conv_init=config.conv_init,
        # The modified init's gamma0 is 0 for the last norm of each block, by its definition.
        zero_init_last_norm=bn_stats_pass or config.zero_init_last_norm,
        remat_blocks=remat_blocks,
        name="encoder",
        **_norm_options(config, bn_stats_pass))(images.astype(compute_dtype), is_training)

  return encoder


def network_fn(config, *, bn_stats_pass=False):
  """(images, is_training) -> float32 {embedding, projection[, prediction]}, to be hk.transformed.

  The network computes in config.compute_dtype; every consumer of its outputs (losses, probe,
  collapse metrics, evaluation) gets float32.
  """
  _, projector_norm, predictor_norm = network_norms(config, bn_stats_pass=bn_stats_pass)
  common = _norm_options(config, bn_stats_pass)
  encoder = encoder_fn(config, bn_stats_pass=bn_stats_pass, remat_blocks=config.remat_blocks)

  def forward(images, is_training):
    embedding = encoder(images, is_training)
    projection = nets.MLP(config.projector_hidden_size, config.projection_size, norm=projector_norm,
                          name="projector", **common)(embedding, is_training)
    outputs = dict(embedding=embedding, projection=projection)
    if config.method == "byol":
      outputs["prediction"] = nets.MLP(config.predictor_hidden_size, config.projection_size,
                                       norm=predictor_norm, name="predictor", **common)(projection,
                                                                                        is_training)
    return {k: v.astype(jnp.float32) for k, v in outputs.items()}

  return forward


def embedding_size(config):
  """The width of the encoder's embedding, which the probe reads."""
  return nets.embedding_size(config.depth, config.width)


def make_network(config, *, bn_stats_pass=False):
  """The online/target network as hk.transform_with_state (see network_fn)."""
  return hk.transform_with_state(network_fn(config, bn_stats_pass=bn_stats_pass))


def make_probe(num_classes):
  """The online linear probe on frozen (stop_gradient) encoder features; None without labels."""
  if not num_classes:
    return None
  return hk.without_apply_rng(hk.transform(lambda x: hk.Linear(num_classes, name="probe")(x)))


def encoder_only(tree):
  """The encoder's part of a params or state dict (module paths under `encoder`)."""
  return {k: v for k, v in tree.items() if k.split("/")[0] == "encoder"}


def parameter_counts(params):
  """{top-level module (encoder, projector, predictor, probe): number of parameters}."""
  counts = {}
  for module, leaves in params.items():
    name = module.split("/")[0]
    counts[name] = counts.get(name, 0) + sum(int(v.size) for v in leaves.values())
  return counts


def make_embed_fn(config, params, state):
  """A frozen encoder: uint8 images -> float32 embeddings (BN in evaluation mode).

  `params` and `state` may hold the whole network's or the encoder's alone (an export).
  """
  embed = _embed_program(json.dumps({k: config[k] for k in ENCODER_KEYS}, sort_keys=True))
  return lambda images: embed(params, state, images)


@functools.lru_cache(maxsize=None)
def _embed_program(encoder_json):
  """One jitted program per encoder, shared by every set of params (trained and random init)."""
  encoder = hk.transform_with_state(encoder_fn(ml_collections.ConfigDict(json.loads(encoder_json))))

  def embed(params, state, images):
    features, _ = encoder.apply(encoder_only(params), encoder_only(state), None,
                                augment.normalize(images), is_training=False)
    return features.astype(jnp.float32)

  return cpu_speed.jit(embed)
