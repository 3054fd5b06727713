r"""BYOL without normalization, with the modified init from BN statistics (paper: 65.7%).

    python -m byol_jax.main --config=configs/byol_bn_stats.py --workdir=gs://BUCKET/bn_stats

Every BN is removed; its scale and offset stay trainable, initialised from the batch statistics of
one augmented batch (byol_jax/bn_stats.py). Vanilla BYOL's recipe with 50 warm-up epochs, not 10.
"""
from byol_jax import config as config_lib


def get_config(preset=""):
  c = config_lib.base_config()
  c.method = "byol"
  c.norm = "none"
  c.weight_standardization = False
  c.init = "bn_stats"
  c.batch_size = 4096
  c.epochs = 1000
  c.base_lr = 0.2  # x batch_size / 256.
  c.weight_decay = 1.5e-6
  c.warmup_epochs = 50
  c.tau_base = 0.996
  if config_lib.check_preset(preset) == "tiny":
    config_lib.scale_to_cpu(c)
    c.batch_size = 128
    c.epochs = 30
    c.warmup_epochs = 2  # Longer than vanilla tiny's 1, as 50 epochs are longer than 10.
    c.base_lr = 2.0
    c.tau_base = 0.99
  return c
