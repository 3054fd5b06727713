"""byol_jax: BYOL without batch statistics, in JAX/Haiku."""
import pathlib
import re

import setuptools

HERE = pathlib.Path(__file__).parent


def _requirements():
  lines = (HERE / "requirements.txt").read_text().splitlines()
  return [l.strip() for l in lines if l.strip() and not l.startswith("#")]


def _with_extra(package, extra):
  """`package`'s line of requirements.txt with `extra` added, so both name the same range."""
  (line,) = [l for l in _requirements() if re.match(rf"{package}\s*[<>=!~]", l)]
  return f"{package}[{extra}]{line[len(package):]}"


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
        # matplotlib: tests/test_reproduce.py checks the plots that reproduce.py writes.
        # hypothesis: property-based tests where the input space is wide (conv shapes).
        # pytest-xdist: the tests run on two workers (README).
        # yapf: the repo's formatter; pinned, as another version formats some lines differently.
        "test": [
            "pytest>=7", "pytest-xdist>=3", "matplotlib>=3.7", "hypothesis>=6", "yapf==0.43.0"
        ],
        "experiments": ["matplotlib>=3.7"],
        # NVIDIA GPUs: jaxlib's CUDA 12 plugin with CUDA from pip, over requirements.txt's jax range
        # (jax 0.10 also offers jax[cuda13] for CUDA 13 drivers).
        "gpu": [_with_extra("jax", "cuda12")],
        # Compiling for TPU topologies on any host (benchmarks/tpu_compile.py), and TPU VMs.
        "tpu": ["jax[tpu]"],
        # Only benchmarks/bench_train_step.py's PyTorch baseline; never imported by byol_jax.
        "bench": ["torch==2.13.0"],
        # byol_jax.export_torch (the encoder as PyTorch weights) and its tests; torch_resnet.py
        # itself needs only torch (tested with 2.13 and 2.14).
        "torch": ["torch==2.13.0"],
    },
)
