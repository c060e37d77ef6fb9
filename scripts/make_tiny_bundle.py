"""Build the committed ONNX-only tiny bundles (tests/fixtures/tiny, tests/fixtures/tiny3) that
serving and app tests use, so that they need no TensorFlow.

Each is the bundle a ``trained_*`` fixture of the tests trains (recipes in
tests/helpers/tiny_bundle.py: the ``tiny_cnn`` test backbone on the synthetic 3-class dataset,
or on 3 sports of the shared dataset), rewritten without ``model.weights.h5``: the float ONNX
model serves it. Rebuild them when the bundle format or the ONNX export changes:

    python scripts/make_tiny_bundle.py                    # both, into tests/fixtures/
    python scripts/make_tiny_bundle.py tiny --out DIR     # one, elsewhere

Needs the train extra (TensorFlow); ``tiny3`` also the shared dataset (--data). Each bundle is
100-300 KB.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers.tiny_bundle import FIXTURES, RECIPES, TINY_DATA, onnx_only_copy  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data" / "sports100"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"which bundles (default: all of {', '.join(RECIPES)})")
    parser.add_argument("--out", type=Path, help="bundle folder (one name only; default tests/fixtures/NAME)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help=f"the shared dataset (default {SHARED_DATA})")
    args = parser.parse_args(argv)
    names = args.names or list(RECIPES)
    unknown = sorted(set(names) - set(RECIPES))
    if unknown:
        parser.error(f"unknown bundle(s) {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    if args.out and len(names) != 1:
        parser.error("--out takes one bundle name")
    for name in names:
        out = build(name, args.out or FIXTURES / name, args.data)
        size = sum(f.stat().st_size for f in out.iterdir())
        print(f"{out}: {', '.join(sorted(f.name for f in out.iterdir()))} ({size / 1024:.0f} KB)")
    return 0


def build(name: str, out: Path, shared_data: Path) -> Path:
    """Train the recipe ``name`` in a temporary folder and write its ONNX-only copy to ``out``."""
    from helpers.datasets import make_dataset
    from sports_classifier.config import TrainConfig
    from sports_classifier.training.loop import train

    fields, data_kind = RECIPES[name]
    with tempfile.TemporaryDirectory(prefix="make-tiny-bundle-") as tmp:
        tmp = Path(tmp)
        data = make_dataset(tmp / "data", **TINY_DATA) if data_kind == "synthetic" else shared_data
        trained = tmp / name
        train(TrainConfig(**fields), data, trained, cache_dir=tmp / "cache", progress=False)
        return onnx_only_copy(trained, out)


if __name__ == "__main__":
    raise SystemExit(main())
