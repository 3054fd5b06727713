"""What every config shares, the CPU scale of the `tiny` preset, and config validation.

A config file (configs/) spells its paper row's recipe: method, normalization, init and
optimization, at full scale and, under `if preset == "tiny":`, on a CPU. `base_config` holds what
the rows share (the ResNet-50 and heads, the data pipeline and views, the run and the evaluation)
and leaves each recipe key unset, so that `validate` names any a file forgets. `validate` runs
before any work starts, so a bad value fails in seconds with a message that names the key, the
value and the valid choices.
"""
import importlib.util
import json
import os

import ml_collections
from ml_collections import config_dict

from byol_jax.data import augment
from byol_jax.nets import layers
from byol_jax.nets import resnet

METHODS = ("byol", "simclr")
INITS = ("default", "bn_stats")
BN_STATS_BACKWARDS = ("affine", "bn")
PRESETS = ("", "tiny")
COMPUTE_DTYPES = ("float32", "bfloat16")
# Keys that change how a run runs, not what it computes: a resumed run may change them.
HOW_IT_RUNS = ("log_every", "checkpoint_every", "keep_checkpoints", "async_checkpoints",
               "remat_blocks", "accumulation_steps", "eval", "knn_monitor", "data_dir",
               "skip_corrupt_images", "max_image_pixels", "profile_first_step", "profile_steps")
# The recipe keys each config file sets, and the ones only one method reads.
RECIPE = ("method", "norm", "weight_standardization", "init", "batch_size", "epochs", "base_lr",
          "weight_decay", "warmup_epochs")
METHOD_ONLY = {"tau_base": "byol", "temperature": "simclr"}


class ConfigError(ValueError):
  """A config value or combination that cannot run; main prints it without a traceback."""


def base_config():
  """The keys every config has: the paper's ResNet-50 on ImageNet, its recipe keys unset."""
  c = ml_collections.ConfigDict()
  c.method = config_dict.placeholder(str)  # One of METHODS.
  # Normalization: `norm` is the encoder's; the heads follow it unless set.
  c.norm = config_dict.placeholder(str)
  c.projector_norm = config_dict.placeholder(str)
  c.predictor_norm = config_dict.placeholder(str)
  c.weight_standardization = config_dict.placeholder(bool)
  c.gn_groups = 16
  c.bn_cross_replica = True  # BN statistics over the global batch, as the paper trains.
  c.init = config_dict.placeholder(str)  # `bn_stats`: the paper's modified init, with norm=none.
  # Its backward pass: `affine` (the paper's: the scale and offset's own gradient) or `bn` (an
  # ablation: BN's gradient through the batch statistics, forward unchanged).
  c.bn_stats_backward = "affine"
  # Network.
  c.depth = 50
  c.width = 1.0  # Float, so that the CPU fractions 0.25 and 0.5 are valid overrides.
  c.stem = "imagenet"
  # Recompute the encoder blocks' activations in the backward pass: less memory, more FLOPs.
  c.remat_blocks = False
  # Init, as the official code and the paper: Haiku's default conv init (variance 1 / fan_in) and
  # scale 1 in every norm. `he` and True are the torchvision / Goyal et al. choices.
  c.conv_init = "haiku"
  c.zero_init_last_norm = False
  c.projector_hidden_size = 4096
  c.projection_size = 256
  c.predictor_hidden_size = 4096
  # Mixed precision: activations in bfloat16 (TPU/GPU speed and memory); parameters, gradients,
  # optimizer state, target EMA, losses and metrics stay float32 (see train.network_fn).
  c.compute_dtype = "bfloat16"
  # Optimization.
  c.batch_size = config_dict.placeholder(int)  # Global, over all devices of all hosts.
  # Gradient accumulation: each device's batch runs as this many micro-batches, one at a time,
  # whose gradients are averaged before the one update; needs norms without batch statistics.
  c.accumulation_steps = 1
  c.epochs = config_dict.placeholder(int)
  c.max_steps = config_dict.placeholder(int)  # Overrides epochs when set.
  c.base_lr = config_dict.placeholder(float)  # Scaled by batch_size / 256.
  c.weight_decay = config_dict.placeholder(float)
  c.warmup_epochs = config_dict.placeholder(int)
  c.momentum = 0.9
  c.trust_coefficient = 1e-3
  # LARS leaves biases and norm scales/offsets out of its trust ratio (official); True: an ablation.
  c.lars_adapt_biases_and_norms = False
  c.tau_base = config_dict.placeholder(float)  # BYOL's target EMA rate at step 0.
  c.temperature = config_dict.placeholder(float)  # SimCLR's NT-Xent temperature.
  c.probe_lr = 1e-3  # Adam on the online linear probe, which sees stop_gradient(features).
  # Data.
  c.dataset = "imagenet2012"
  c.data_dir = config_dict.placeholder(str)
  c.image_size = 224
  c.shuffle_buffer = 10_000
  c.crop_min_area = 0.08  # Random-resized-crop area, as a fraction of the image: [this, 1].
  c.view1 = ml_collections.ConfigDict(augment.VIEW1)  # The paper's two asymmetric views.
  c.view2 = ml_collections.ConfigDict(augment.VIEW2)
  # True: leave out and count images that cannot be decoded; False: stop at the first one.
  c.skip_corrupt_images = False
  # Image files larger than this (width x height, read from the header before decoding) are
  # refused before any work: one huge image can take gigabytes to decode.
  c.max_image_pixels = 50_000_000
  # Run.
  c.seed = 0  # The data order, the augmentations and (unless init_seed is set) the initial weights.
  # The initial weights' own seed, so a result can be traced to the init or to the data order.
  c.init_seed = config_dict.placeholder(int)
  c.log_every = 100
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  # True: a save returns once the state is on the host, and is written while training goes on.
  c.async_checkpoints = True
  # A profile of steps [profile_first_step, + profile_steps) in WORKDIR/tensorboard; unset: none.
  c.profile_first_step = config_dict.placeholder(int)
  c.profile_steps = 5
  # kNN top-1 while training, logged as knn_top1 every `every_steps` (a multiple of log_every; 0:
  # never) and at the last step: the online encoder's embeddings of `query_split`, each classified
  # by its eval.knn_k nearest in `bank_split` (centre crops as eval.crop_fraction). The default
  # queries are the official code's ImageNet validation split (the last 10,000 train images).
  c.knn_monitor = ml_collections.ConfigDict(
      dict(every_steps=0, bank_split="train[:10000]", query_split="train[-10000:]"))
  # Evaluation after training (linear probe on frozen features, kNN).
  c.eval = ml_collections.ConfigDict(
      dict(
          enabled=True,  # Evaluate (and print top-1) when training ends.
          # The official protocol: raw features, lr = linear_base_lr x batch/256. True standardises
          # the features first (evaluation/linear.py), so one lr fits encoders of any feature scale.
          linear_epochs=80,
          linear_batch_size=1024,
          linear_base_lr=0.2,
          standardize_features=False,
          # Splits of the linear classifier's (and kNN's) train and test images; unset: the
          # dataset's (imagenet2012: train and validation). Choose settings on a validation split
          # (shapes10: test_split="validation"), so the test split is read for final numbers only.
          train_split=config_dict.placeholder(str),
          test_split=config_dict.placeholder(str),
          knn_k=20,
          knn_temperature=0.07,
          batch_size=1000,
          random_init_baseline=True,
          crop_fraction=0.875,  # Test views: the central 87.5% (224 of 256), resized.
          # True: the paper's protocol (fresh crop + flip views each epoch); False: cached features
          # of centre crops, far cheaper on a CPU.
          linear_augment=True))
  return c


def from_file(spec):
  """The config of a config file, given as --config takes it: "configs/byol.py[:PRESET]"."""
  path, _, preset = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"No config file {path!r}; the config files are in configs/.")
  module_spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(preset)


def check_preset(preset):
  """`preset`, if a config file knows it (see PRESETS)."""
  if preset not in PRESETS:
    raise ConfigError(f"Unknown config preset {preset!r}; valid presets: {PRESETS[1:]} "
                      "(e.g. --config=configs/byol_gn_ws.py:tiny), or none.")
  return preset


def scale_to_cpu(c):
  """The `tiny` preset's scale, shared by every config file: the embedded dataset, a ResNet-18 of
  width 1/4 and narrow heads, and an evaluation a 2-core CPU runs in a minute. The recipe at this
  scale (batch, epochs, learning rate, target rate) is each config file's."""
  c.dataset = "shapes10"
  c.image_size = 32
  c.depth = 18
  c.width = 0.25  # 16-128 channels.
  c.stem = "imagenet"
  c.projector_hidden_size = 256
  c.projection_size = 64
  c.predictor_hidden_size = 256
  c.compute_dtype = "float32"  # bfloat16 is no faster on a CPU; float32 keeps these runs exact.
  # The hue is shapes10's one colour nuisance: shifts of up to half a turn (the paper: 0.1) make
  # it differ between two views. The blur's zero padding darkens a rim of one pixel in three at
  # this size, which tells the always-blurred view 1 from view 2; mirrored padding has no rim.
  for view in (c.view1, c.view2):
    view.hue = 0.5
    view.blur_padding = "reflect"
  c.shuffle_buffer = 2_000
  c.log_every = 100
  c.checkpoint_every = 100
  # kNN of the validation split against 2,000 train images, a few times per run.
  c.knn_monitor.update(every_steps=500, bank_split="train[:2000]", query_split="validation")
  c.eval.linear_epochs = 30
  c.eval.linear_batch_size = 256
  c.eval.linear_augment = False
  # One probe lr for every encoder, whatever its feature scale (no normalization, Haiku's init):
  # features are standardised first, so the table compares features, not scales.
  c.eval.standardize_features = True
  c.eval.crop_fraction = 1.0  # 32 px shapes touch the border: keep the whole image.
  c.eval.batch_size = 500
  return c


def _choice(c, key, choices):
  value = c[key]
  if value not in choices:
    raise ConfigError(f"config.{key}={value!r} is not valid; choose one of {choices}.")


def weights_seed(c):
  """The seed of the initial weights: config.init_seed, or config.seed where it is unset."""
  return c.seed if c.init_seed is None else c.init_seed


def head_norms(c):
  """(projector_norm, predictor_norm), each defaulting to the encoder's norm."""
  return (c.projector_norm or c.norm, c.predictor_norm or c.norm)


def _reads(config, key):
  """Whether a run of `config` (a dict) reads `key`: a method's own keys only its runs read."""
  return key not in METHOD_ONLY or config.get("method") == METHOD_ONLY[key]


def with_defaults(saved):
  """A saved config (a dict from config.json) with the keys added since it was written, each at
  its default, which computes what the code computed before."""
  return {**json.loads(base_config().to_json()), **saved}


def changed_keys(saved, now):
  """{key: (saved value, current value)} of the top-level keys that change what a run computes;
  a key the saved config lacks counts as its default (`with_defaults`)."""
  saved = with_defaults(saved)
  return {
      k: (saved.get(k), now.get(k))
      for k in sorted(set(saved) | set(now))
      if saved.get(k) != now.get(k) and k not in HOW_IT_RUNS and
      (_reads(saved, k) or _reads(now, k))
  }


def validate_eval(e):
  """The evaluation keys (config.eval), also those of configs/linear_eval.py."""
  positive = ("linear_epochs", "linear_batch_size", "knn_k", "batch_size")
  for key in positive:
    if isinstance(e[key], bool) or not isinstance(e[key], int) or e[key] < 1:
      raise ConfigError(f"config.eval.{key}={e[key]!r} must be a positive integer.")
  for key in ("linear_base_lr", "knn_temperature"):
    if not e[key] > 0:
      raise ConfigError(f"config.eval.{key}={e[key]!r} must be > 0.")
  if not 0 < e.crop_fraction <= 1:
    raise ConfigError(f"config.eval.crop_fraction={e.crop_fraction!r} must be in (0, 1]: the "
                      "central part of the image that test views keep (the paper: 0.875).")


def _validate_groups(c):
  """gn_groups must divide the channels of every GN layer, encoder and heads."""
  channels = {}
  if c.norm == "gn":
    channels.update(
        {f"the encoder's {n}-channel layers": n for n in resnet.norm_channels(c.depth, c.width)})
  projector_norm, predictor_norm = head_norms(c)
  if projector_norm == "gn":
    channels["config.projector_hidden_size"] = c.projector_hidden_size
  if predictor_norm == "gn":
    channels["config.predictor_hidden_size"] = c.predictor_hidden_size
  bad = sorted(what for what, n in channels.items() if n % c.gn_groups)
  if bad:
    raise ConfigError(f"config.gn_groups={c.gn_groups} does not divide the channels of {bad}. "
                      "Fix: choose gn_groups dividing every layer's channels (e.g. a power of 2 "
                      "no larger than the narrowest layer), or another norm.")


def _validate_knn_monitor(c):
  every = c.knn_monitor.every_steps
  if not isinstance(every, int) or every < 0 or every % c.log_every:
    raise ConfigError(
        f"config.knn_monitor.every_steps={every!r} must be 0 (no kNN while training) or a multiple "
        f"of config.log_every={c.log_every}: its top-1 is logged with that step's metrics.")
  for key in ("bank_split", "query_split"):
    if not isinstance(c.knn_monitor[key], str) or not c.knn_monitor[key]:
      raise ConfigError(f"config.knn_monitor.{key}={c.knn_monitor[key]!r} must name a split of "
                        f"{c.dataset!r}, e.g. 'train[:10000]'.")


def validate(c):
  """Fail fast, naming the key, the value and the fix, before any data or device is touched."""
  unset = [k for k in RECIPE + tuple(METHOD_ONLY) if c[k] is None and _reads(c, k)]
  if unset:
    raise ConfigError(f"config.{unset[0]} is unset: a config file spells its whole recipe "
                      f"({', '.join(unset)} here); set it in the file (as those in configs/ do) or "
                      f"with --config.{unset[0]}=VALUE.")
  _choice(c, "method", METHODS)
  for key in ("norm", "projector_norm", "predictor_norm"):
    if c[key] is not None:
      _choice(c, key, layers.NORMS)
  _choice(c, "init", INITS)
  _choice(c, "bn_stats_backward", BN_STATS_BACKWARDS)
  if c.bn_stats_backward != "affine" and c.init != "bn_stats":
    raise ConfigError(f"config.bn_stats_backward={c.bn_stats_backward!r} changes the backward pass "
                      "of the modified init's scales and offsets; it needs config.init='bn_stats' "
                      f"(here {c.init!r}).")
  _choice(c, "depth", resnet.DEPTHS)
  _choice(c, "stem", resnet.STEMS)
  _choice(c, "conv_init", tuple(resnet.CONV_INITS))
  _choice(c, "width", resnet.WIDTHS)
  _choice(c, "compute_dtype", COMPUTE_DTYPES)
  positive = ("batch_size", "epochs", "image_size", "log_every", "checkpoint_every",
              "keep_checkpoints", "gn_groups", "projector_hidden_size", "projection_size",
              "predictor_hidden_size", "profile_steps", "max_image_pixels")
  for key in positive:
    if not isinstance(c[key], int) or c[key] < 1:
      raise ConfigError(f"config.{key}={c[key]!r} must be a positive integer.")
  if c.max_steps is not None and c.max_steps < 1:
    raise ConfigError(f"config.max_steps={c.max_steps!r} must be a positive integer (or unset to "
                      "train for config.epochs).")
  if c.profile_first_step is not None and c.profile_first_step < 2:
    raise ConfigError(f"config.profile_first_step={c.profile_first_step!r} must be >= 2: step 1 "
                      "compiles, so a profile of it shows compilation, not training.")
  for key in ("base_lr", "probe_lr") + (("temperature",) if _reads(c, "temperature") else ()):
    if not c[key] > 0:
      raise ConfigError(f"config.{key}={c[key]!r} must be > 0.")
  if c.weight_decay < 0 or c.warmup_epochs < 0:
    raise ConfigError("config.weight_decay and config.warmup_epochs must be >= 0; got "
                      f"{c.weight_decay!r} and {c.warmup_epochs!r}.")
  if not 0 < c.crop_min_area <= 1:
    raise ConfigError(f"config.crop_min_area={c.crop_min_area!r} must be in (0, 1]: the smallest "
                      "random crop as a fraction of the image's area (BYOL: 0.08).")
  if _reads(c, "tau_base") and not 0 <= c.tau_base <= 1:
    raise ConfigError(f"config.tau_base={c.tau_base!r} must be in [0, 1].")
  for view in ("view1", "view2"):
    view_keys = tuple(augment.VIEW1)
    missing = sorted(set(view_keys) - set(c[view].keys()))
    if missing:
      raise ConfigError(f"config.{view} lacks {missing}; it needs all of {view_keys}.")
    for key in view_keys:
      if key.endswith("_prob") and not 0 <= c[view][key] <= 1:
        raise ConfigError(f"config.{view}.{key}={c[view][key]!r} must be a probability in [0, 1].")
    if c[view].blur_padding not in augment.BLUR_PADDINGS:
      raise ConfigError(f"config.{view}.blur_padding={c[view].blur_padding!r} must be one of "
                        f"{augment.BLUR_PADDINGS}.")
  validate_eval(c.eval)
  _validate_knn_monitor(c)
  _validate_groups(c)
  if c.init == "bn_stats":
    if c.method != "byol":
      raise ConfigError("config.init='bn_stats' is the modified init of BYOL without batch "
                        f"statistics; it is not defined for config.method={c.method!r}.")
    norms = dict(zip(("norm", "projector_norm", "predictor_norm"), (c.norm,) + head_norms(c)))
    not_none = {k: v for k, v in norms.items() if v != "none"}
    if not_none:
      raise ConfigError(
          f"config.init='bn_stats' replaces BN by a scale and offset initialised from batch "
          f"statistics, so every norm must be 'none', but {not_none} is set. Use "
          "--config.norm=none (and leave projector_norm/predictor_norm unset), or init=default.")
    if not c.bn_cross_replica:
      raise ConfigError("config.init='bn_stats' measures the statistics of the global batch, "
                        "which needs config.bn_cross_replica=True.")
  _validate_accumulation(c)
  return c


def _validate_accumulation(c):
  """Accumulation equals one big batch only where no example's loss depends on the others."""
  k = c.accumulation_steps
  if not isinstance(k, int) or k < 1 or c.batch_size % k:
    raise ConfigError(f"config.accumulation_steps={k!r} must be a positive integer that divides "
                      f"each device's batch (config.batch_size={c.batch_size} / devices).")
  if k == 1:
    return
  batch_norms = {
      key: norm
      for key, norm in zip(("norm", "projector_norm", "predictor_norm"), (c.norm,) + head_norms(c))
      if norm in ("bn", "bn_stopgrad")
  }
  if batch_norms:
    raise ConfigError(
        f"config.accumulation_steps={k} with BN ({batch_norms}): BN's statistics would be those of "
        f"each micro-batch (config.batch_size / {k}), not of the batch. Use norms without batch "
        "statistics (configs/byol_gn_ws.py, configs/byol_bn_stats.py, or ln/none), or "
        "accumulation_steps=1 on enough devices for the batch.")
  if c.method == "simclr":
    raise ConfigError(
        f"config.accumulation_steps={k} with method='simclr': each micro-batch would contrast "
        f"only config.batch_size / {k} negatives, not the batch's. Use accumulation_steps=1 on "
        "enough devices for the batch.")
