"""The house style: the repo is formatted with its yapf style (.style.yapf), and no line, not even
a string or comment the formatter cannot split, passes its column limit."""
import configparser
import pathlib
import subprocess

from yapf.yapflib import yapf_api

ROOT = pathlib.Path(__file__).resolve().parents[1]
STYLE = ROOT / ".style.yapf"


def _python_files():
  return subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True,
                        check=True).stdout.split()


def test_python_files_are_formatted_with_the_repo_style():
  unformatted = [
      name for name in _python_files()
      if yapf_api.FormatFile(str(ROOT / name), style_config=str(STYLE))[2]
  ]
  assert not unformatted, (f"Not formatted: {unformatted}. Fix: yapf -i -r byol_jax configs "
                           "experiments tests setup.py")


def test_python_lines_fit_the_column_limit():
  style = configparser.ConfigParser()
  style.read(STYLE)
  limit = style.getint("style", "column_limit")
  long_lines = [
      f"{name}:{number}" for name in _python_files()
      for number, line in enumerate((ROOT / name).read_text().splitlines(), 1) if len(line) > limit
  ]
  assert not long_lines, f"Lines over {limit} columns: {long_lines}"
