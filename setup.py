"""byol_jax: BYOL without batch statistics, in JAX/Haiku."""
import pathlib

import setuptools

HERE = pathlib.Path(__file__).parent


def _requirements():
  lines = (HERE / "requirements.txt").read_text().splitlines()
  return [l.strip() for l in lines if l.strip() and not l.startswith("#")]


setuptools.setup(
    name="byol_jax",
    version="0.1.0",
    description=("BYOL with swappable normalization (BN, LN, GN, none) and weight "
                 "standardization, in JAX/Haiku."),
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["byol_jax", "byol_jax.*"]),
    python_requires=">=3.10",
    install_requires=_requirements(),
    extras_require={
        # matplotlib: tests/test_reproduce.py checks the plots experiments/reproduce.py writes.
        # hypothesis: property-based tests where the input space is wide (conv shapes).
        # pytest-xdist: the tests run on two workers (README).
        # yapf: the repo's formatter; pinned, as another version formats some lines differently.
        "test": [
            "pytest>=7", "pytest-xdist>=3", "matplotlib>=3.7", "hypothesis>=6", "yapf==0.43.0"
        ],
        "experiments": ["matplotlib>=3.7"],
        # Compiling for TPU topologies on any host (experiments/tpu_compile.py), and TPU VMs.
        "tpu": ["jax[tpu]"],
        # Only experiments/bench_train_step.py's PyTorch baseline; never imported by byol_jax.
        "bench": ["torch==2.13.0"],
        # byol_jax.export_torch (the encoder as PyTorch weights) and its tests; torch_resnet.py
        # itself needs only torch (tested with 2.13 and 2.14).
        "torch": ["torch==2.13.0"],
    },
)
