"""experiments/reproduction/view_collapse.py: a workdir's collapse metrics on its own views."""
import pytest

from experiments.reproduction import view_collapse
from train_helpers import small_config


def test_a_workdir_without_a_checkpoint_reports_its_step_0_network(tmp_path, shapes10_dir):
  config = small_config(data_dir=shapes10_dir, dataset="shapes10", norm="gn",
                        weight_standardization=True)
  (tmp_path / "config.json").write_text(config.to_json())
  step, stats = view_collapse.view_cosines(str(tmp_path))
  assert step == 0 and set(stats) == set(view_collapse.OUTPUTS)
  for values in stats.values():
    assert set(values) == {
        "positive_cosine", "negative_cosine", "within_view_cosine", "projection_std"
    }
    assert all(-1.0 <= values[k] <= 1.0 for k in values if k.endswith("cosine"))
    assert values["projection_std"] > 0.1  # A random network's outputs are spread.


def test_a_directory_that_is_not_a_workdir_is_named(tmp_path):
  with pytest.raises(SystemExit, match="has no config.json"):
    view_collapse.view_cosines(str(tmp_path))
