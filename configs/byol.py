r"""BYOL with batch normalization: the paper's Table 2, row 1 (74.3% linear top-1, 1000 epochs).

    python -m byol_jax.main --config=configs/byol.py --workdir=gs://BUCKET/byol
    python -m byol_jax.main --config=configs/byol.py:tiny --workdir=/tmp/byol  # 2-core CPU

Other rows of the paper's tables are this file with overrides, e.g. `--config.norm=ln` or
`--config.predictor_norm=none` (experiments/reproduction/reproduce.py lists them).
"""
from byol_jax import config as config_lib


def get_config(preset=""):
  c = config_lib.base_config()
  c.method = "byol"
  c.norm = "bn"
  c.weight_standardization = False
  c.init = "default"
  # LARS, cosine decay after a linear warm-up; the target's EMA rate goes from tau_base to 1.
  c.batch_size = 4096
  c.epochs = 1000
  c.base_lr = 0.2  # x batch_size / 256.
  c.weight_decay = 1.5e-6
  c.warmup_epochs = 10
  c.tau_base = 0.996
  if config_lib.check_preset(preset) == "tiny":
    config_lib.scale_to_cpu(c)
    c.batch_size = 128
    c.epochs = 30
    c.warmup_epochs = 1
    # 30 epochs instead of 1000 need a larger lr and a faster target.
    c.base_lr = 2.0
    c.tau_base = 0.99
  return c
