"""The measures the CPU-scale protocol is designed with (experiments/reproduction/:
protocol_screen.py, colour_probe.py, intervals.py), on inputs whose answer is known."""
import json

import numpy as np
import pytest

pytest.importorskip("tensorflow")  # protocol_screen reads data through the host pipeline.

# pylint: disable=g-import-not-at-top,wrong-import-position
from byol_jax.data import augment
from experiments.reproduction import colour_probe
from experiments.reproduction import intervals
from experiments.reproduction import protocol_screen


@pytest.mark.parametrize("size, side", [(224, 7), (64, 2), (36, 2), (33, 2), (32, 1)])
def test_last_map_rounds_up_as_same_convolutions_do(size, side):
  assert protocol_screen.last_map(size, "imagenet") == side
  assert protocol_screen.last_map(32, "cifar") == 4


def test_retrieval_finds_partners_only_where_they_share_something():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(200, 16))
  labels = np.arange(200) % 10
  partner, same_class = protocol_screen.retrieval(a, a + 0.01 * rng.normal(size=a.shape), labels)
  assert partner == 1.0 and same_class == 1.0
  partner, _ = protocol_screen.retrieval(a, rng.normal(size=a.shape), labels)
  assert partner < 0.05  # Chance is 1 / 200.


def test_pair_cosine_is_one_for_one_direction_and_near_zero_for_random_ones():
  rng = np.random.default_rng(1)
  assert protocol_screen.pair_cosine(np.outer(rng.uniform(1, 2, 50),
                                              np.ones(8))) == (pytest.approx(1.0))
  assert abs(protocol_screen.pair_cosine(rng.normal(size=(300, 64)))) < 0.02


def test_t_interval_of_three_values():
  mean, half = intervals.mean_interval([1.0, 2.0, 3.0])
  assert mean == 2.0 and half == pytest.approx(4.3027 / np.sqrt(3), rel=1e-4)  # t(0.975, 2)
  assert intervals.format_interval([0.5]) == "50.0"
  assert intervals.format_interval([0.1, 0.2, 0.3]) == "20.0 ± 24.8"


def test_ridge_r2_is_high_for_a_linear_target_and_about_zero_for_noise():
  rng = np.random.default_rng(2)
  features = rng.normal(size=(2000, 10))
  assert colour_probe.ridge_r2(features, features[:, :2] @ np.ones((2, 1))) > 0.4
  assert abs(colour_probe.ridge_r2(features, rng.normal(size=(2000, 1)))) < 0.02


def test_hue_targets_read_the_darker_and_the_brighter_colour():
  hsv = np.zeros((1, 10, 10, 3), np.float32)
  hsv[..., 1] = 0.8
  hsv[..., 0], hsv[..., 2] = 0.25, 0.3  # Dark: a quarter turn.
  hsv[0, :, 5:, 0], hsv[0, :, 5:, 2] = 0.5, 0.9  # Bright: half a turn.
  images = np.round(np.asarray(augment.hsv_to_rgb(hsv)) * 255).astype(np.uint8)
  np.testing.assert_allclose(colour_probe.hue_targets(images)[0], [0, 1, -1, 0], atol=0.02)


def test_summarize_runs_reads_a_finished_workdir(tmp_path):
  from experiments.reproduction import summarize_runs  # pylint: disable=g-import-not-at-top
  config = {
      "dataset": "textures10", "norm": "gn", "init": "default", "image_size": 36, "epochs": 30,
      "seed": 1, "view1": {"hue": 0.5}, "eval": {"test_split": "validation"}, "base_lr": 1.0,
      "tau_base": 0.99, "warmup_epochs": 1
  }
  (tmp_path / "config.json").write_text(json.dumps(config))
  (tmp_path / "eval.json").write_text(
      json.dumps(
          {"top1": 0.4, "random_init_top1": 0.25, "knn_top1": 0.3, "random_init_knn_top1": 0.2}))
  records = [{"step": s, "positive_cosine": s / 10, "negative_cosine": 0.1} for s in range(1, 8)]
  records[-1]["knn_top1"] = 0.3
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  row = summarize_runs.summarize(tmp_path)
  assert (row["linear"], row["random_linear"], row["knn"], row["random_knn"]) == pytest.approx(
      (40, 25, 30, 20))
  assert row["pos_cos"] == pytest.approx(0.5)  # The last five: steps 3-7.
  assert row["hue"] == 0.5 and row["knn_monitor"] == [(7, 0.3)]
  assert (row["base_lr"], row["tau_base"], row["init_seed"]) == (1.0, 0.99, "= seed")
  # Runs from before the ablation keys had their official values.
  assert (row["bn_stats_backward"], row["lars_adapt"], row["warmup"]) == ("affine", False, 1)
  config.update(init_seed=0, bn_stats_backward="bn", lars_adapt_biases_and_norms=True)
  (tmp_path / "config.json").write_text(json.dumps(config))
  row = summarize_runs.summarize(tmp_path)
  assert (row["init_seed"], row["bn_stats_backward"], row["lars_adapt"]) == (0, "bn", True)


def test_runs_that_differ_only_in_their_seed_are_one_recipe_with_paired_gains():
  from experiments.reproduction import summarize_runs  # pylint: disable=g-import-not-at-top
  recipe = dict(dataset="textures10", norm="bn", init="default", bn_stats_backward="affine",
                lars_adapt=False, image_size=36, hue=0.5, epochs=30, base_lr=1.0, tau_base=0.99,
                warmup=1, init_seed="= seed", pos_cos=0.5)
  rows = [
      dict(recipe, seed=0, linear=40.0, random_linear=30.0, knn=30.0, random_knn=20.0),
      dict(recipe, seed=1, linear=20.0, random_linear=10.0, knn=20.0, random_knn=10.0),
      dict(recipe, base_lr=2.0, seed=0, linear=50.0, random_linear=30.0, knn=30.0, random_knn=20.0),
      # Its init apart from its data seed: not another seed of the first recipe.
      dict(recipe, seed=0, init_seed=1, linear=40.0, random_linear=30.0, knn=30.0, random_knn=20.0)
  ]
  first, second, third = summarize_runs.by_recipe(rows)
  assert (first["seeds"], second["seeds"], third["seeds"]) == (2, 1, 1)
  # Each seed gains exactly 10 points over its own random init: the paired interval is 0 wide,
  # while the top-1s themselves differ by 20 points.
  assert first["linear gain"] == "10.0 ± 0.0" and first["linear"].startswith("30.0 ± 1")
  assert second["linear"] == "50.0" and second["kNN gain"] == "10.0"
