r"""SimCLR, the contrastive baseline of the paper's Table 1 (69.3% with BN, 1000 epochs).

    python -m byol_jax.main --config=configs/simclr.py --workdir=gs://BUCKET/simclr

NT-Xent over both views of the global batch, negatives gathered across replicas.
"""
from byol_jax import config as config_lib


def get_config(preset=""):
  c = config_lib.base_config()
  c.method = "simclr"
  c.norm = "bn"
  c.weight_standardization = False
  c.init = "default"
  c.batch_size = 4096
  c.epochs = 1000
  c.base_lr = 0.3  # x batch_size / 256.
  c.weight_decay = 1e-6
  c.warmup_epochs = 10
  c.temperature = 0.1
  if config_lib.check_preset(preset) == "tiny":
    config_lib.scale_to_cpu(c)
    c.batch_size = 128
    c.epochs = 30
    c.warmup_epochs = 1
    c.base_lr = 2.0
  return c
