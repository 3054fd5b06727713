"""Tests for byol_jax.export: the exported encoder is the trained one, in its compute dtype."""
import jax
import numpy as np
import pytest

from byol_jax import export
from byol_jax import model
from byol_jax import train
from train_helpers import small_config


@pytest.mark.parametrize("compute_dtype", ["bfloat16", "float32"])
def test_exported_encoder_gives_the_run_s_features(tmp_path, compute_dtype):
  config = small_config(norm="gn", gn_groups=4, weight_standardization=True,
                        compute_dtype=compute_dtype)
  state = train.init_state(config, jax.random.PRNGKey(0), image_shape=(16, 16, 3), num_classes=10,
                           steps_per_epoch=10)
  export.save_encoder(tmp_path, config, state.online_params, state.online_state)
  images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
  features = export.load_encoder(tmp_path)(images)
  expected = model.make_embed_fn(config, state.online_params, state.online_state)(images)
  assert features.dtype == np.float32
  # The same program on the same parameters: the same bits (bf16 against f32 differs by ~1%).
  np.testing.assert_array_equal(features, expected)
