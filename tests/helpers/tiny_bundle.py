"""The tiny test bundles: how each is trained (shared by the ``trained_*`` fixtures and
scripts/make_tiny_bundle.py) and their committed ONNX-only copies under tests/fixtures/, which
serving and app tests use without TensorFlow.

- ``tiny``: the ``tiny_cnn`` test backbone at 32 px, 3 epochs on the synthetic 3-class dataset
  of ``helpers.datasets`` (labels cats, dogs, owls);
- ``tiny3``: the same backbone at its 64 px, 2 epochs on 3 real sports of the shared dataset
  (archery, basketball, bowling), so that the app's example photos have classes it knows.
"""

from __future__ import annotations

from pathlib import Path

from .bundles import copy_bundle, rewrite_bundle

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
# The synthetic dataset (helpers.datasets.make_dataset) of the tiny bundle.
TINY_DATA = {"per_class": (8, 4)}
# name -> (TrainConfig fields, dataset: "synthetic" or "shared")
RECIPES = {
    "tiny": ({"backbone": "tiny_cnn", "weights": "none", "head_epochs": 3, "image_size": 32}, "synthetic"),
    "tiny3": ({"backbone": "tiny_cnn", "weights": "none", "head_epochs": 2,
               "classes": ("archery", "basketball", "bowling")}, "shared"),
}
TINY_CONFIG = RECIPES["tiny"][0]
SPORTS_CONFIG = RECIPES["tiny3"][0]


def onnx_only_copy(trained: Path, out: Path) -> Path:
    """``trained`` rewritten at ``out`` without its Keras weights: config.json's checksums and
    the model card then list only the files that are there."""
    from sports_classifier import bundle

    return rewrite_bundle(trained, out, drop=[bundle.WEIGHTS])


def copy_of_committed(name: str, dest: Path) -> Path:
    """A private copy of the committed bundle ``name`` (tests change their copy, never the original)."""
    source = FIXTURES / name
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"{source} is missing: run scripts/make_tiny_bundle.py")
    return copy_bundle(source, dest)
