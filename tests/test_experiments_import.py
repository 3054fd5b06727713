"""Every experiment script imports as a module from the repository root, with no sys.path edit,
as `python -m experiments.<group>.<script>` runs it."""
import importlib
import pathlib
import sys

import pytest

_EXPERIMENTS = pathlib.Path(__file__).resolve().parent.parent / "experiments"
_MODULES = sorted(p for group in ("reproduction", "benchmarks")
                  for p in (_EXPERIMENTS / group).glob("*.py") if p.stem != "__init__")


def test_the_top_level_holds_only_what_both_groups_share():
  assert sorted(p.name for p in _EXPERIMENTS.glob("*.py")) == ["__init__.py", "machine.py"]


@pytest.mark.parametrize("path", _MODULES, ids=lambda p: f"{p.parent.name}.{p.stem}")
def test_each_imports_without_editing_sys_path(path):
  path_before = list(sys.path)
  module = importlib.import_module(f"experiments.{path.parent.name}.{path.stem}")
  assert sys.path == path_before, f"{path} edits sys.path"
  if 'if __name__ == "__main__":' in path.read_text():  # A script, not a library of them.
    assert callable(getattr(module, "main", None)), f"{path} runs, but has no main()"
