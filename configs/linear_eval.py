"""Linear evaluation of an exported encoder (frozen), plus kNN; writes WORKDIR/eval.json.

    python -m byol_jax.linear_eval --config=configs/linear_eval.py \
        --config.encoder_dir=WORKDIR/encoder --workdir=EVAL_DIR

The paper's protocol: a linear classifier on frozen features, SGD with Nesterov momentum 0.9, no
weight decay, 80 epochs on random-crop + flip views, tested on centre crops (224 of 256).
`dataset` and `image_size` default to those the encoder was trained with.
"""
import ml_collections
from ml_collections import config_dict

from byol_jax import config as config_lib


def get_config(preset=""):
  config = ml_collections.ConfigDict()
  config.encoder_dir = config_dict.placeholder(str)
  config.dataset = config_dict.placeholder(str)
  config.data_dir = config_dict.placeholder(str)
  config.image_size = config_dict.placeholder(int)
  config.seed = 0
  config.skip_corrupt_images = False  # As in training: leave out undecodable images.
  config.max_image_pixels = config_lib.base_config().max_image_pixels  # As in training.
  config.eval = config_lib.base_config().eval
  if config_lib.check_preset(preset) == "tiny":
    config.eval = config_lib.scale_to_cpu(config_lib.base_config()).eval
  return config
