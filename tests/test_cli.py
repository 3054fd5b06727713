"""Tests for byol_jax.cli: the quiet log, one-line expected errors, and the eval report."""
import json
import logging as python_logging

from absl import logging
import pytest

from byol_jax import cli
from byol_jax import config as config_lib


def _record(pathname, level, message="a message"):
  return python_logging.LogRecord("absl", level, pathname, 1, message, None, None)


@pytest.fixture
def verbosity():
  before = logging.get_verbosity()
  yield logging.set_verbosity
  logging.set_verbosity(before)


def test_library_info_is_left_out_unless_verbosity_asks(verbosity):
  own = cli._OWN_CODE + "run.py"
  library = "/site-packages/orbax/checkpoint/checkpoint_manager.py"
  verbosity(logging.INFO)
  assert cli._keep(_record(own, python_logging.INFO))
  assert not cli._keep(_record(library, python_logging.INFO))
  assert cli._keep(_record(library, python_logging.WARNING))
  assert not cli._keep(
      _record(library, python_logging.WARNING,
              "From x: CounterV2 is deprecated and will be removed in ..."))
  verbosity(logging.DEBUG)  # --verbosity=1
  assert cli._keep(_record(library, python_logging.INFO))


def test_filter_is_installed_once():
  cli.quiet_library_logs()
  cli.quiet_library_logs()
  assert logging.get_absl_handler().filters.count(cli._keep) == 1


def test_expected_error_exits_with_its_one_line_message():

  def fail():
    raise config_lib.ConfigError("config.depth=7 is not valid")

  with pytest.raises(SystemExit) as exit_info:
    cli.exit_on_expected_error(fail)
  assert exit_info.value.code == "ConfigError: config.depth=7 is not valid"
  with pytest.raises(KeyError):  # Anything else keeps its traceback.
    cli.exit_on_expected_error(lambda: {}["missing"])


def test_report_writes_eval_json_and_prints_the_summary(tmp_path, capsys):
  results = {"top1": 0.5, "knn_top1": 0.25, "random_init_top1": 0.1, "random_init_knn_top1": 0.125}
  cli.report(results, str(tmp_path / "eval"))
  assert json.loads((tmp_path / "eval" / "eval.json").read_text()) == results
  assert capsys.readouterr().out == ("linear top-1 0.5000 | kNN top-1 0.2500 | random-init "
                                     "encoder: linear 0.1000, kNN 0.1250\n")
  cli.report(None, str(tmp_path / "nothing"))
  assert not (tmp_path / "nothing").exists()
