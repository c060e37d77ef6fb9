"""Out-of-distribution threshold: under which top probability a photo is called "probably none of
the sports". Chosen per model and stored in the bundle's ``config.json`` (``out_of_distribution``),
so a model carries its own threshold wherever it goes (a folder, the Hub, a Space).

It is chosen from two sets of top probabilities:

- in distribution: the model's predictions on the dataset's ``valid/`` images;
- out of distribution: photos that show no sport and ship inside Python packages (so this runs
  offline): scikit-image's sample photos (the horse and motorcycle pictures are left out: horse
  racing and motorcycle racing are classes), matplotlib's Grace Hopper portrait, scikit-image
  face crops, each photo also as four corner crops and a centre crop, plus synthetic images
  (noise, flat colours, gradients).

Training picks it when scikit-image is installed (the ``train`` extra);
``sports-classifier threshold --model M --data D --write`` picks it again (after an int8 export,
for example: the threshold belongs to the engine that serves).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .errors import UserInputError

MIN_NON_SPORT = 50


# Pictures in scikit-image's data folder that are not used: they show (parts of) sports.
EXCLUDED = {"horse.png", "motorcycle_left.png", "motorcycle_right.png", "motorcycle_disp.npz"}
METHOD = (
    "Top-probability threshold, chosen per model on valid/ (all validation images) against "
    "non-sport photos shipped in Python packages (scikit-image sample photos except horse and "
    "motorcycle, matplotlib's Grace Hopper portrait, scikit-image face crops; each photo also "
    "as 4 corner crops and a centre crop) plus synthetic noise/flat/gradient images: among "
    "thresholds flagging at most max_false_flag of the validation images, the one maximising "
    "non-sport flagged minus validation flagged (Youden's J). Made by sports_classifier.ood (sports-classifier threshold)."
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


def choose_ood_threshold(in_scores: Sequence[float], out_scores: Sequence[float], *,
                         max_false_flag: float = 0.05,
                         in_correct: Sequence[bool] | None = None) -> dict:
    """Pick the top-probability threshold under which a photo is called "not one of the sports".

    ``in_scores``: top probabilities on the validation images (in distribution);
    ``out_scores``: top probabilities on photos that show none of the sports. A photo is
    flagged when its top probability is below the threshold. Among thresholds that flag at
    most ``max_false_flag`` of the validation images, the one with the largest Youden index
    (non-sport photos flagged minus validation images flagged) wins; ties go to the smallest
    threshold, placed midway between two observed scores so that it does not sit on one.
    Pure function: numbers in, a dict with the threshold and its justification out.

    >>> choose_ood_threshold([0.9, 0.95, 0.99, 0.6], [0.2, 0.3, 0.7], max_false_flag=0.25)["threshold"]
    0.8
    """
    ins = np.asarray(in_scores, dtype=np.float64)
    outs = np.asarray(out_scores, dtype=np.float64)
    if ins.size == 0 or outs.size == 0:
        raise UserInputError("need top probabilities for both validation and non-sport images")
    if not 0.0 <= max_false_flag < 1.0:
        raise UserInputError(f"max_false_flag must be in [0, 1), got {max_false_flag}")
    values = np.unique(np.concatenate([ins, outs, [0.0, 1.0]]))
    candidates = np.concatenate([[0.0], (values[:-1] + values[1:]) / 2])
    best = None
    for t in candidates:
        false_flag = float(np.mean(ins < t))
        if false_flag > max_false_flag + 1e-12:
            continue
        detect = float(np.mean(outs < t))
        score = detect - false_flag
        if best is None or score > best[0] + 1e-12:
            best = (score, float(t), false_flag, detect)
    _, t, false_flag, detect = best
    result = {
        "threshold": round(t, 6),
        "valid_flagged": round(false_flag, 4),
        "non_sport_flagged": round(detect, 4),
        "youden_j": round(detect - false_flag, 4),
        "max_false_flag": max_false_flag,
        "n_valid": int(ins.size),
        "n_non_sport": int(outs.size),
        "valid_top_prob_quantiles": {q: round(float(np.quantile(ins, float(q))), 4) for q in ("0.01", "0.05", "0.5")},
        "non_sport_top_prob_quantiles": {q: round(float(np.quantile(outs, float(q))), 4) for q in ("0.5", "0.95", "0.99")},
    }
    if in_correct is not None:
        correct = np.asarray(in_correct, dtype=bool)
        flagged = ins < t
        result["valid_flagged_that_were_wrong"] = int(np.sum(flagged & ~correct))
        result["valid_flagged_total"] = int(np.sum(flagged))
    return result


def non_sport_scores(predict_proba, *, min_images: int = MIN_NON_SPORT) -> tuple[np.ndarray, list[str]]:
    """Top probabilities of ``predict_proba`` (images -> probabilities) on the non-sport images,
    and each image's group. Raises ``UserInputError`` when too few are installed."""
    others = non_sport_images()
    if len(others) < min_images:
        raise UserInputError(f"only {len(others)} non-sport images found; pip install scikit-image "
                             "(part of the train extra) to choose an out-of-distribution threshold")
    probs = predict_proba([img for _, _, img in others])
    return probs.max(axis=1), [g for g, _, _ in others]


def threshold_from_probabilities(valid_probs: np.ndarray, valid_y: np.ndarray, predict_proba, *,
                                 split: str = "valid", max_false_flag: float = 0.05) -> dict:
    """The full choice (``choose_ood_threshold``'s dict plus per-group rates, the method and a
    one-line justification) from a model's probabilities on a split and its ``predict_proba``."""
    out_scores, groups = non_sport_scores(predict_proba)
    choice = choose_ood_threshold(valid_probs.max(axis=1), out_scores, max_false_flag=max_false_flag,
                                  in_correct=valid_probs.argmax(axis=1) == valid_y)
    threshold = choice["threshold"]
    names = sorted(set(groups))
    choice["non_sport_flagged_by_group"] = {
        g: round(float(np.mean([s < threshold for gg, s in zip(groups, out_scores) if gg == g])), 4) for g in names}
    choice["non_sport_counts_by_group"] = {g: groups.count(g) for g in names}
    choice["split"] = split
    choice["method"] = METHOD
    choice["justification"] = (
        f"At {threshold:.3f}, {choice['valid_flagged']:.1%} of the {choice['n_valid']} {split} images "
        f"are flagged ({choice.get('valid_flagged_that_were_wrong', 0)} of those "
        f"{choice.get('valid_flagged_total', 0)} were misclassified anyway) and "
        f"{choice['non_sport_flagged']:.1%} of the {choice['n_non_sport']} non-sport images are."
    )
    return choice


def choose_threshold_for(classifier, data_dir: str | Path, *, split: str = "valid",
                         max_false_flag: float = 0.05, progress: bool = False) -> dict:
    """Choose the threshold of a loaded ``Classifier`` (with the engine it serves with) on a split."""
    from .datasets import discover

    frame = discover(data_dir).frame(split)
    index = {label: i for i, label in enumerate(classifier.labels)}
    frame = frame[frame["label"].isin(index)]
    if frame.empty:
        raise UserInputError(f"split {split!r} of {data_dir} has no images of this model's classes")
    probs, rows, _ = classifier.score_files(frame["filepath"].tolist(), progress=progress, desc=split)
    y = frame["label"].map(index).to_numpy()[rows]
    return threshold_from_probabilities(probs, y, classifier.predict_proba, split=split,
                                        max_false_flag=max_false_flag)


def write_threshold(bundle_path: str | Path, choice: dict) -> None:
    """Store a choice in the bundle's config.json (atomically; the model card is rewritten too)."""
    from . import bundle

    bundle.update_config(bundle_path, out_of_distribution=choice)
