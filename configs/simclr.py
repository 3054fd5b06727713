"""SimCLR, the contrastive baseline of the paper's Table 1 (it does not collapse without BN).

NT-Xent over both views of the global batch with temperature 0.1, negatives gathered across
replicas; LARS with base lr 0.3 (x batch/256), weight decay 1e-6, 10 warm-up epochs.
"""
from byol_jax import config as config_lib


def get_config(preset=""):
  config = config_lib.base_config()
  config.method = "simclr"
  config.temperature = 0.1
  config.base_lr = 0.3
  config.weight_decay = 1e-6
  return config_lib.apply_preset(config, preset)
