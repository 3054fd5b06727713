"""The reproduction (reproduction/) and the benchmarks (benchmarks/), run as modules from the
repository root, e.g. `python -m experiments.reproduction.reproduce --table=2`."""
import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent
RESULTS = REPO / "experiments" / "results"  # Every script's tables.
