"""BYOL with batch normalization (paper Table 2, row 1: 74.3% top-1 at 1000 epochs).

ResNet-50, batch 4096, LARS with base lr 0.2 (x batch/256), weight decay 1.5e-6, 10 warm-up
epochs, tau_base 0.996. `configs/byol.py:tiny` runs the same recipe on the embedded dataset on a
CPU.
"""
from byol_jax import config as config_lib


def get_config(preset=""):
  config = config_lib.base_config()
  return config_lib.apply_preset(config, preset)
