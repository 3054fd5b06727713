"""Config files load and validate; every bad value fails with the key, the value and the choices."""
import pathlib

import pytest

from byol_jax import config as config_lib
from byol_jax import model

CONFIGS = pathlib.Path(__file__).parent.parent / "configs"
TRAINING_CONFIGS = ("byol", "byol_gn_ws", "byol_bn_stats", "simclr")


def load(name, preset=""):
  return config_lib.from_file(f"{CONFIGS / name}.py:{preset}")


@pytest.mark.parametrize("name", TRAINING_CONFIGS)
@pytest.mark.parametrize("preset", ["", "tiny"])
def test_training_configs_validate(name, preset):
  config = config_lib.validate(load(name, preset))
  if preset == "tiny":
    assert config.dataset == "shapes10" and config.depth == 18
  # Mixed precision where it pays (TPU/GPU); exact float32 on the CPU preset.
  assert config.compute_dtype == ("float32" if preset == "tiny" else "bfloat16")


def test_a_recipe_key_a_config_leaves_unset_is_named():
  config = load("byol")
  config.base_lr = None
  with pytest.raises(config_lib.ConfigError, match=r"config.base_lr is unset.*--config.base_lr="):
    config_lib.validate(config)
  config = load("byol", "tiny")
  config.method = "simclr"  # SimCLR reads a temperature, which a BYOL file does not set.
  with pytest.raises(config_lib.ConfigError, match="config.temperature is unset"):
    config_lib.validate(config)
  config.temperature = 0.1
  config_lib.validate(config)


def test_a_key_only_the_other_method_reads_is_no_change():
  saved = load("byol").to_dict()
  now = load("byol")
  now.temperature = 0.5  # BYOL does not read it.
  assert config_lib.changed_keys(saved, now.to_dict()) == {}
  now.tau_base = 0.99
  assert config_lib.changed_keys(saved, now.to_dict()) == {"tau_base": (0.996, 0.99)}


def test_a_key_added_since_a_config_was_saved_counts_as_its_default():
  """Workdirs written before bn_stats_backward existed resume; one that would change is named."""
  saved = load("byol_bn_stats").to_dict()
  del saved["bn_stats_backward"], saved["lars_adapt_biases_and_norms"]
  now = load("byol_bn_stats")
  assert config_lib.changed_keys(saved, now.to_dict()) == {}
  now.bn_stats_backward = "bn"
  assert config_lib.changed_keys(saved, now.to_dict()) == {"bn_stats_backward": ("affine", "bn")}


def test_paper_hyper_parameters():
  gn = load("byol_gn_ws")
  assert (gn.norm, gn.gn_groups, gn.weight_standardization) == ("gn", 16, True)
  assert (gn.base_lr, gn.weight_decay, gn.tau_base) == (0.24, 3e-8, 0.999)
  assert not gn.zero_init_last_norm  # The paper's init: scale 1 in every norm.
  tiny_gn = load("byol_gn_ws", "tiny")  # GN+WS collapsed with tiny's 0.99 or scale 1.
  assert tiny_gn.tau_base == 0.999 and tiny_gn.zero_init_last_norm
  assert tiny_gn.epochs == 60  # At 30 it stayed under the random ResNet (git history).
  bn = load("byol")
  assert (bn.base_lr, bn.weight_decay, bn.tau_base, bn.warmup_epochs) == (0.2, 1.5e-6, 0.996, 10)
  stats = load("byol_bn_stats")
  assert (stats.norm, stats.init, stats.warmup_epochs) == ("none", "bn_stats", 50)
  assert load("simclr").method == "simclr"


@pytest.mark.parametrize("name", TRAINING_CONFIGS)
def test_tiny_preset_shifts_hue_further_and_mirrors_the_blur_and_the_paper_configs_do_not(name):
  for view in ("view1", "view2"):
    tiny, paper = load(name, "tiny")[view], load(name)[view]
    assert tiny.hue == 0.5 and paper.hue == 0.1
    assert tiny.blur_padding == "reflect" and paper.blur_padding == "zeros"  # The official one.
    # The other strengths, probabilities, blur and solarization stay the paper's.
    changed = ("hue", "blur_padding")
    rest = [{k: v for k, v in view.items() if k not in changed} for view in (tiny, paper)]
    assert rest[0] == rest[1]


def test_heads_follow_the_encoder_norm_unless_set():
  config = load("byol")
  config.norm = "ln"
  assert config_lib.head_norms(config) == ("ln", "ln")
  config.predictor_norm = "none"
  assert config_lib.head_norms(config) == ("ln", "none")


@pytest.mark.parametrize("name", ["byol", "byol_gn_ws"])
def test_bn_stats_override_works_from_any_byol_config(name):
  config = load(name, "tiny")
  config.norm, config.init = "none", "bn_stats"
  config_lib.validate(config)


@pytest.mark.parametrize("key, value, expected", [
    ("norm", "batchnorm", "config.norm='batchnorm' is not valid; choose one of ('bn', 'ln', 'gn', "
     "'none', 'bn_stopgrad')"),
    ("method", "moco", "config.method='moco' is not valid"),
    ("init", "zeros", "config.init='zeros' is not valid"),
    ("depth", 42, "config.depth=42 is not valid; choose one of (10, 18, 34, 50, 101, 152, 200)"),
    ("stem", "vit", "config.stem='vit'"),
    ("width", 8, "config.width=8"),
    ("batch_size", 0, "config.batch_size=0 must be a positive integer"),
    ("base_lr", -1.0, "config.base_lr=-1.0 must be > 0"),
    ("tau_base", 1.5, "config.tau_base=1.5 must be in [0, 1]"),
    ("crop_min_area", 0.0, "config.crop_min_area=0.0 must be in (0, 1]"),
    ("max_steps", 0, "config.max_steps=0 must be a positive integer"),
    ("compute_dtype", "float16", "config.compute_dtype='float16' is not valid; choose one of "
     "('float32', 'bfloat16')"),
    ("conv_init", "xavier", "config.conv_init='xavier' is not valid; choose one of ('haiku', "
     "'he')"),
])
def test_bad_values_name_key_value_and_choices(key, value, expected):
  config = load("byol")
  config[key] = value
  with pytest.raises(ValueError) as error:
    config_lib.validate(config)
  assert expected in str(error.value)


@pytest.mark.parametrize("every", [-1, 150])
def test_knn_monitor_runs_at_log_steps(every):
  config = load("byol", "tiny")
  config.knn_monitor.every_steps = every
  with pytest.raises(ValueError, match=f"knn_monitor.every_steps={every!r} must be 0"):
    config_lib.validate(config)


def test_a_resume_may_change_how_it_runs_but_not_what_it_computes():
  saved = load("byol_gn_ws", "tiny")
  now = load("byol_gn_ws", "tiny")
  now.accumulation_steps, now.knn_monitor.every_steps, now.eval.knn_k = 4, 0, 5
  assert config_lib.changed_keys(saved.to_dict(), now.to_dict()) == {}
  now.tau_base = 0.99
  assert config_lib.changed_keys(saved.to_dict(), now.to_dict()) == {"tau_base": (0.999, 0.99)}


def test_bad_view_probability():
  config = load("byol")
  config.view2.solarize_prob = 2.0
  with pytest.raises(ValueError, match=r"config.view2.solarize_prob=2.0 must be a probability"):
    config_lib.validate(config)


def test_bad_blur_padding_names_the_choices():
  config = load("byol")
  config.view1.blur_padding = "edge"
  with pytest.raises(ValueError, match=r"config.view1.blur_padding='edge' must be one of "):
    config_lib.validate(config)


def test_bn_stats_with_batch_norm_is_refused():
  config = load("byol")
  config.init = "bn_stats"
  with pytest.raises(
      ValueError, match=r"every norm must be 'none', but \{'norm': 'bn', "
      r"'projector_norm': 'bn', 'predictor_norm': 'bn'\}"):
    config_lib.validate(config)


def test_bn_stats_with_simclr_is_refused():
  config = load("simclr")
  config.norm, config.init = "none", "bn_stats"
  with pytest.raises(ValueError, match="not defined for config.method='simclr'"):
    config_lib.validate(config)


def test_bn_stats_without_cross_replica_statistics_is_refused():
  config = load("byol_bn_stats")
  config.bn_cross_replica = False
  with pytest.raises(ValueError, match="needs config.bn_cross_replica=True"):
    config_lib.validate(config)


def test_bns_backward_is_an_option_of_the_modified_init_only():
  config = load("byol_bn_stats")
  config.bn_stats_backward = "bn"
  config_lib.validate(config)
  assert model.network_norms(config) == ("affine_bn_backward",) * 3
  assert model.network_norms(config, bn_stats_pass=True) == ("bn",) * 3
  config = load("byol")
  config.bn_stats_backward = "bn"
  with pytest.raises(ValueError, match="needs config.init='bn_stats' \\(here 'default'\\)"):
    config_lib.validate(config)
  config.bn_stats_backward = "batch"
  with pytest.raises(ValueError, match="config.bn_stats_backward='batch' is not valid"):
    config_lib.validate(config)


def test_unknown_preset():
  with pytest.raises(ValueError, match="Unknown config preset 'huge'"):
    load("byol", "huge")


def test_profile_window_must_leave_out_the_compiling_step():
  config = load("byol")
  config.profile_first_step = 1
  with pytest.raises(config_lib.ConfigError, match="profile_first_step=1 must be >= 2"):
    config_lib.validate(config)
  config.profile_first_step = 2
  config_lib.validate(config)
