"""Choose a model's out-of-distribution threshold on valid/ and store it in ui_defaults.json.

The app calls a photo "probably not one of the sports" when the model's top probability is
under this threshold. It is chosen, per model, from two sets of top probabilities:

- in distribution: the model's predictions on the dataset's ``valid/`` images (500 photos);
- out of distribution: photos that show no sport, which ship inside Python packages (so this
  runs offline): scikit-image's sample photos (astronaut, cat, coffee, coins, moon, rocket,
  bricks, text pages, microscopy...; the horse and motorcycle pictures are left out because
  horse racing and motorcycle racing are classes), matplotlib's Grace Hopper portrait, a few
  of scikit-image's face crops, each photo also as four corner crops and a centre crop, plus
  synthetic images (noise, flat colours, gradients).

``sports_classifier.ui.choose_ood_threshold`` keeps the thresholds that flag at most
``--max-false-flag`` (default 5%) of the validation images and takes the one that flags the
most non-sport photos beyond that (Youden's J). The chosen value, the rates it achieves on
both sets and this method are written to ``sports_classifier/ui_defaults.json`` under the
SHA-256 of the bundle's weights, where the app looks it up.

    python scripts/choose_threshold.py --model models/lite0 --data ../shared/data/sports100 --write
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# Pictures in scikit-image's data folder that are not used: they show (parts of) sports.
EXCLUDED = {"horse.png", "motorcycle_left.png", "motorcycle_right.png", "motorcycle_disp.npz"}
METHOD = (
    "Top-probability threshold, chosen per model on valid/ (all validation images) against "
    "non-sport photos shipped in Python packages (scikit-image sample photos except horse and "
    "motorcycle, matplotlib's Grace Hopper portrait, scikit-image face crops; each photo also "
    "as 4 corner crops and a centre crop) plus synthetic noise/flat/gradient images: among "
    "thresholds flagging at most max_false_flag of the validation images, the one maximising "
    "non-sport flagged minus validation flagged (Youden's J). Made by scripts/choose_threshold.py."
)


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _crops(img: Image.Image) -> list[Image.Image]:
    w, h = img.size
    cw, ch = max(1, int(w * 0.6)), max(1, int(h * 0.6))
    boxes = [(0, 0, cw, ch), (w - cw, 0, w, ch), (0, h - ch, cw, h), (w - cw, h - ch, w, h),
             ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)]
    return [img] + [img.crop(b) for b in boxes]


def non_sport_images(seed: int = 0) -> list[tuple[str, str, Image.Image]]:
    """(group, name, RGB image) triples of photos and pictures that show no sport."""
    out: list[tuple[str, str, Image.Image]] = []
    photos: list[tuple[str, Image.Image]] = []
    skimage_data = _package_dir("skimage")
    if skimage_data is not None:
        data = skimage_data / "data"
        for f in sorted(data.iterdir()):
            if f.suffix.lower() in (".png", ".jpg") and f.name not in EXCLUDED:
                photos.append((f"skimage:{f.name}", Image.open(f).convert("RGB")))
        faces = data / "lfw_subset.npy"
        if faces.is_file():
            arr = np.load(faces, allow_pickle=False)
            for i in range(0, min(len(arr), 200), 20):  # 10 different faces
                face = (np.clip(arr[i], 0, 1) * 255).astype(np.uint8)
                out.append(("faces", f"skimage:lfw_subset[{i}]", Image.fromarray(face).convert("RGB")))
    mpl = _package_dir("matplotlib")
    if mpl is not None:
        hopper = mpl / "mpl-data" / "sample_data" / "grace_hopper.jpg"
        if hopper.is_file():
            photos.append(("matplotlib:grace_hopper.jpg", Image.open(hopper).convert("RGB")))
    for name, img in photos:
        for i, crop in enumerate(_crops(img)):
            out.append(("photos", f"{name}#{i}", crop))
    rng = np.random.default_rng(seed)
    for i in range(10):
        out.append(("synthetic", f"noise{i}", Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))))
        color = rng.integers(0, 256, 3).astype(np.uint8)
        out.append(("synthetic", f"flat{i}", Image.fromarray(np.broadcast_to(color, (224, 224, 3)).copy())))
        a, b = rng.integers(0, 256, (2, 3))
        ramp = np.linspace(0, 1, 224)[None, :, None]
        grad = (a * (1 - ramp) + b * ramp).repeat(224, axis=0).astype(np.uint8)
        out.append(("synthetic", f"gradient{i}", Image.fromarray(grad)))
    return out


def main(argv: list[str] | None = None) -> int:
    from sports_classifier import Classifier
    from sports_classifier.data import discover
    from sports_classifier.runtime import predict_files
    from sports_classifier.ui import DEFAULTS_FILE, choose_ood_threshold, record_threshold

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="bundle folder")
    parser.add_argument("--data", default="../shared/data/sports100", help="dataset folder holding valid/")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--max-false-flag", type=float, default=0.05,
                        help="most validation images the threshold may flag (default 0.05)")
    parser.add_argument("--defaults", default=str(DEFAULTS_FILE), help="the JSON file to update")
    parser.add_argument("--write", action="store_true", help="store the threshold (else only print it)")
    args = parser.parse_args(argv)

    clf = Classifier.from_pretrained(args.model)
    frame = discover(args.data).frame(args.split)
    index = {label: i for i, label in enumerate(clf.labels)}
    frame = frame[frame["label"].isin(index)]
    probs, rows, skipped = predict_files(clf.engine, frame["filepath"].tolist(), clf.config.image_size,
                                         progress=True, desc=args.split)
    y = frame["label"].map(index).to_numpy()[rows]
    in_scores = probs.max(axis=1)
    in_correct = probs.argmax(axis=1) == y

    others = non_sport_images()
    if len(others) < 50:
        print(f"error: only {len(others)} non-sport images found; install scikit-image", file=sys.stderr)
        return 1
    out_probs = clf.predict_proba([img for _, _, img in others])
    out_scores = out_probs.max(axis=1)

    choice = choose_ood_threshold(in_scores, out_scores, max_false_flag=args.max_false_flag,
                                  in_correct=in_correct)
    groups = sorted({g for g, _, _ in others})
    choice["non_sport_flagged_by_group"] = {
        g: round(float(np.mean([s < choice["threshold"] for (gg, _, _), s in zip(others, out_scores) if gg == g])), 4)
        for g in groups
    }
    choice["non_sport_counts_by_group"] = {g: sum(gg == g for gg, _, _ in others) for g in groups}
    choice["split"] = args.split
    choice["method"] = METHOD
    choice["justification"] = (
        f"At {choice['threshold']:.3f}, {choice['valid_flagged']:.1%} of the {choice['n_valid']} {args.split} images "
        f"are flagged ({choice.get('valid_flagged_that_were_wrong', 0)} of those "
        f"{choice.get('valid_flagged_total', 0)} were misclassified anyway) and "
        f"{choice['non_sport_flagged']:.1%} of the {choice['n_non_sport']} non-sport images are."
    )
    print(json.dumps(choice, indent=2))
    if args.write:
        record_threshold(args.defaults, clf.config, choice, model=Path(args.model).name)
        print(f"written to {args.defaults}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
