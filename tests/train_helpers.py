"""Small configs and deterministic batches shared by the training tests and their subprocesses."""
import pathlib

import numpy as np

from byol_jax import config as config_lib

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def load_config(name, preset=""):
  """configs/NAME.py with `preset`, as --config=configs/NAME.py:PRESET loads it."""
  return config_lib.from_file(f"{CONFIGS / name}.py:{preset}")


NUM_CLASSES = 10


def small_config(**overrides):
  """ResNet-10 (cifar stem) on 16x16 inputs with narrow heads: the smallest real BYOL step."""
  config = load_config("byol", "tiny")
  config.depth = 10  # One block per stage: every kind of layer, half the compile of ResNet-18's.
  config.stem, config.width = "cifar", 0.25  # Every stage's feature map is larger than 1x1.
  config.base_lr = 0.2  # The paper's; the measurements quoted in test_train.py were taken with it.
  config.image_size = 16
  config.batch_size = 8
  config.projector_hidden_size = 32
  config.projection_size = 16
  config.predictor_hidden_size = 32
  config.max_steps = 10
  config.warmup_epochs = 0  # Otherwise the first step has learning rate 0 and moves nothing.
  config.tau_base = 0.9  # Far from 1, so the EMA is visible after one step.
  config.update(overrides)
  return config_lib.validate(config)


def global_batch(config, step, num_devices):
  """The global batch of `step` laid out as [num_devices, batch / num_devices, ...]."""
  rng = np.random.default_rng(1000 + step)
  size = config.batch_size
  shape = (size, config.image_size, config.image_size, 3)
  batch = {
      "view1": rng.integers(0, 256, shape, dtype=np.uint8),
      "view2": rng.integers(0, 256, shape, dtype=np.uint8),
      "label": rng.integers(0, NUM_CLASSES, (size,)).astype(np.int32),
      "index": np.arange(size, dtype=np.int32),
  }
  return {k: v.reshape((num_devices, size // num_devices) + v.shape[1:]) for k, v in batch.items()}
