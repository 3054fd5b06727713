"""The house style that a formatter would not catch: one line width, 100 columns, everywhere."""
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
LINE_WIDTH = 100


def test_python_lines_fit_the_line_width():
  files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
  long_lines = [f"{name}:{number}" for name in files
                for number, line in enumerate((ROOT / name).read_text().splitlines(), 1)
                if len(line) > LINE_WIDTH]
  assert not long_lines, f"Lines over {LINE_WIDTH} columns: {long_lines}"
