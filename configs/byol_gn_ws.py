r"""BYOL with group norm and weight standardization, no batch statistics (paper: 73.9%).

    python -m byol_jax.main --config=configs/byol_gn_ws.py --workdir=gs://BUCKET/gn_ws
    python -m byol_jax.main --config=configs/byol_gn_ws.py:tiny --workdir=/tmp/gn_ws  # CPU

The paper's GN + WS hyper-parameters: base lr 0.24, weight decay 3e-8, tau_base 0.999.
"""
from byol_jax import config as config_lib


def get_config(preset=""):
  c = config_lib.base_config()
  c.method = "byol"
  c.norm = "gn"
  c.gn_groups = 16
  c.weight_standardization = True
  c.init = "default"
  c.batch_size = 4096
  c.epochs = 1000
  c.base_lr = 0.24  # x batch_size / 256.
  c.weight_decay = 3e-8
  c.warmup_epochs = 10
  c.tau_base = 0.999
  if config_lib.check_preset(preset) == "tiny":
    config_lib.scale_to_cpu(c)
    c.batch_size = 128
    c.epochs = 60  # Twice vanilla tiny's: at 30 GN + WS ended under its random init on shapes10.
    c.warmup_epochs = 1
    c.base_lr = 2.0
    # Each residual block's last norm starts at 0, so every block starts as the identity: with
    # scale 1 (the paper's init) its projections collapsed early at this scale.
    c.zero_init_last_norm = True
  return c
