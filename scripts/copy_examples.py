"""Copy a few validation images per class into ``examples/<class name>/`` for the app.

The source is the CC0 "100 Sports Image Classification" dataset; the first ``--per-class``
images (sorted by file name) of every class of ``valid/`` are copied unchanged, so the copy is
reproducible. The total is checked against ``--max-mb`` before anything is written.

    python scripts/copy_examples.py --data ../shared/data/sports100 --out examples --per-class 2
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}

README = """# Example images

{n} photos, {per_class} per class for each of the {classes} sports, copied unchanged from the
`valid/` split of the **100 Sports Image Classification** dataset by Gerald Piosenka
(<https://www.kaggle.com/datasets/gpiosenka/sports-classification>), released under
**CC0 1.0 (public domain)**.

Layout: `examples/<class name>/<file name>`; the folder name is the true label, spelled as in
the dataset (misspellings included). The app's Examples tab shows them and predicts the one
you click. Regenerate with:

    python scripts/copy_examples.py --data ../shared/data/sports100 --out examples --per-class {per_class}

Because these images come from `valid/` (the split the models were selected on, and on which
the app's out-of-distribution threshold was chosen), predictions on them look better than on
new photos; the held-out `test/` split is the honest measure.
"""


def plan(data_dir: Path, per_class: int) -> list[tuple[Path, str]]:
    valid = data_dir / "valid"
    if not valid.is_dir():
        raise SystemExit(f"error: {valid} not found; --data must hold the dataset's valid/ folder")
    picks = []
    for class_dir in sorted(p for p in valid.iterdir() if p.is_dir()):
        files = sorted(f for f in class_dir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        picks += [(f, class_dir.name) for f in files[:per_class]]
    return picks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/sports100", help="dataset folder holding valid/")
    parser.add_argument("--out", default="examples", help="destination folder (replaced)")
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--max-mb", type=float, default=8.0, help="refuse to copy more than this")
    args = parser.parse_args(argv)

    picks = plan(Path(args.data), args.per_class)
    total = sum(f.stat().st_size for f, _ in picks)
    if total > args.max_mb * 2**20:
        print(f"error: {len(picks)} images are {total / 2**20:.1f} MB, over --max-mb {args.max_mb}",
              file=sys.stderr)
        return 1
    out = Path(args.out)
    if out.exists():
        # Only ever remove a folder this script made (it always holds the README below).
        if not (out / "README.md").is_file():
            print(f"error: {out} exists and was not made by this script; refusing to replace it",
                  file=sys.stderr)
            return 1
        shutil.rmtree(out)
    for src, label in picks:
        dest = out / label / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    classes = len({label for _, label in picks})
    (out / "README.md").write_text(README.format(n=len(picks), per_class=args.per_class, classes=classes))
    print(f"copied {len(picks)} images of {classes} classes ({total / 2**20:.1f} MB) into {out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
