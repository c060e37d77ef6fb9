"""Check that a built wheel carries what the package reads from its own folder at run time.

    python scripts/check_wheel.py dist/sports_classifier-*.whl

The converted ImageNet weights (training starts offline), the training recipes, the app's
text and the weights' NOTICE must be in it; tests, bundled models and example photos must not.
Exit status 1 with one line per problem. CI runs it on the wheel it builds (.ci/run).
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sports_classifier"
# The data files the package opens by path, as globs relative to the package folder.
DATA = ("models/weights/*.weights.h5", "models/weights/NOTICE.md", "training/recipes/*.json", "app/*.md")


def problems(wheel: str | Path) -> list[str]:
    names = set(zipfile.ZipFile(wheel).namelist())
    found = []
    for pattern in DATA:
        wanted = sorted(p.relative_to(ROOT).as_posix() for p in PACKAGE.glob(pattern))
        if not wanted:
            found.append(f"nothing in the checkout matches sports_classifier/{pattern}")
        found += [f"missing from the wheel: {name}" for name in wanted if name not in names]
    modules = sorted(p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
    found += [f"missing from the wheel: {name}" for name in modules if name not in names]
    found += [f"should not be in the wheel: {name}" for name in sorted(names)
              if name.startswith(("tests/", "models/", "examples/", "scripts/")) or name.endswith(".pyc")]
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: check_wheel.py WHEEL", file=sys.stderr)
        return 2
    found = problems(argv[0])
    for line in found:
        print(f"error: {line}", file=sys.stderr)
    if not found:
        size = Path(argv[0]).stat().st_size / 1e6
        print(f"{Path(argv[0]).name}: {size:.1f} MB, weights, recipes and app text present")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
