"""BYOL without normalization, with the modified init from BN statistics (65.7%).

Every BN is removed; its scale and offset stay trainable, initialised from the batch statistics of
one augmented batch (byol_jax/bn_stats.py). As vanilla BYOL, but 50 warm-up epochs instead of 10.
The tiny preset warms up for 2 of its 30 epochs, longer than vanilla tiny's 1, as 50 epochs are
longer than 10.
"""
from byol_jax import config as config_lib


def get_config(preset=""):
  config = config_lib.base_config()
  config.norm = "none"
  config.init = "bn_stats"
  config.warmup_epochs = 50
  return config_lib.apply_preset(config, preset, tiny={"warmup_epochs": 2})
