"""The ``sports-classifier`` command line: train, ensemble, evaluate, predict, export, bench, push, space.

Flags and environment variables are read here and only here; the library takes arguments.
Errors the user can fix end with one line on stderr and a non-zero exit code
(``--debug`` or SPORTS_CLASSIFIER_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from . import __version__
from .errors import SportsClassifierError

DEFAULT_MODEL_ENV = "SPORTS_CLASSIFIER_MODEL"


def default_model() -> str:
    """The bundled default model: $SPORTS_CLASSIFIER_MODEL, else models/<first of
    models/DEFAULT> found in the working folder or beside the package source."""
    if os.environ.get(DEFAULT_MODEL_ENV):
        return os.environ[DEFAULT_MODEL_ENV]
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        marker = root / "models" / "DEFAULT"
        if marker.is_file():
            return str(root / "models" / marker.read_text().strip())
    return "models/default"


def _train_recipe(args):
    """The TrainConfig (or ensemble recipe) that --preset / --config and the flags describe."""
    from .config import TrainConfig
    from .presets import EnsembleRecipe, load_preset, load_recipe

    if args.preset and args.config:
        raise SportsClassifierError("give --preset or --config, not both")
    if args.preset:
        recipe = load_preset(args.preset)
    elif args.config:
        recipe = load_recipe(args.config)
    else:
        recipe = TrainConfig()
    overrides = {
        "backbone": args.backbone, "image_size": args.image_size, "weights": args.weights,
        "mode": args.mode, "seed": args.seed, "batch_size": args.batch_size,
        "learning_rate": args.lr, "head_epochs": args.epochs, "dropout": args.dropout,
        "label_smoothing": args.label_smoothing, "fine_tune_stages": args.fine_tune_stages,
        "fine_tune_epochs": args.fine_tune_epochs, "fine_tune_learning_rate": args.fine_tune_lr,
        "augment_views": args.augment_views, "max_per_class": args.max_per_class,
        "tta_flip": args.tta,
        "classes": tuple(c.strip() for c in args.classes.split(",")) if args.classes else None,
    }
    if args.no_augment:
        overrides["augment"] = False
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(recipe, EnsembleRecipe):
        if overrides:
            raise SportsClassifierError(
                f"an ensemble recipe takes no training options (got {', '.join(sorted(overrides))}); "
                "change its members' presets instead")
        return recipe
    return recipe.replace(**overrides)


def cmd_train(args) -> int:
    from .bundle import read_metrics
    from .ensemble import members_folder, train_ensemble
    from .presets import EnsembleRecipe
    from .train import train

    recipe = _train_recipe(args)
    if isinstance(recipe, EnsembleRecipe):
        start = time.perf_counter()
        out = train_ensemble(recipe.members, args.data, args.out, cache_dir=args.cache_dir,
                             progress=not args.quiet, resume=args.resume)
        print(f"bundle: {out} (members in {members_folder(out)})")
        _print_valid(read_metrics(out))
        print(f"time: {time.perf_counter() - start:.1f} s")
        return 0
    result = train(recipe, args.data, args.out, cache_dir=args.cache_dir, progress=not args.quiet,
                   resume=args.resume)
    print(f"bundle: {result.bundle}")
    _print_valid(result.metrics)
    print(f"time: {result.seconds:.1f} s (feature cache: {result.cache_hits} hit(s), "
          f"{result.cache_misses} computed)")
    return 0


def cmd_ensemble(args) -> int:
    from .bundle import read_metrics
    from .ensemble import combine

    out = combine(args.models, args.out, data_dir=args.data, split=args.split, image_size=args.image_size,
                  progress=not args.quiet)
    print(f"bundle: {out}")
    _print_valid(read_metrics(out), split=args.split)
    return 0


def _print_valid(metrics: dict, split: str = "valid") -> None:
    m = metrics.get(split, {})
    print(f"{split}: accuracy {m.get('accuracy', 0):.4f}  top-5 {m.get('top5_accuracy', 0):.4f}  "
          f"macro F1 {m.get('macro_f1', 0):.4f}  ({m.get('n', 0)} images)")


def _load(args):
    from .classifier import Classifier

    return Classifier.from_pretrained(args.model, runtime=args.runtime, revision=getattr(args, "revision", None))


def cmd_evaluate(args) -> int:
    from .metrics import summary

    metrics = _load(args).evaluate(args.data, split=args.split, progress=not args.json)
    head = summary(metrics)
    if args.json:
        print(json.dumps(head | {"split": args.split, "skipped": metrics["skipped"], "engine": metrics["engine"]}))
    else:
        print(f"{args.split}: {head['n']} images  accuracy {head['accuracy']:.4f}  "
              f"top-5 {head['top5_accuracy']:.4f}  macro F1 {head['macro_f1']:.4f}  loss {head['loss']:.4f}")
        worst = sorted(metrics["per_class"].items(), key=lambda kv: kv[1]["f1"])[:5]
        print("lowest F1: " + ", ".join(f"{k} {v['f1']:.2f}" for k, v in worst))
    return 0


def cmd_predict(args) -> int:
    from .errors import ImageDecodeError

    clf = _load(args)
    failed = 0
    results = []
    for image in args.images:
        try:
            pairs = clf.predict(image, top_k=args.top_k)
        except ImageDecodeError as exc:
            failed += 1
            print(f"error: {one_line(exc)}", file=sys.stderr)
            continue
        if args.json:
            results.append({"image": image, "predictions": [{"label": l, "probability": p} for l, p in pairs]})
        else:
            print(f"{image}: " + ", ".join(f"{l} {p:.1%}" for l, p in pairs))
    if args.json:
        print(json.dumps(results))
    return 1 if failed else 0


def cmd_export(args) -> int:
    from .export import export_bundle

    report = export_bundle(args.model, formats=args.format, calibration=args.calibration,
                           calibration_images=args.calibration_images, drop_float_onnx=args.drop_float_onnx)
    for line in report:
        print(line)
    return 0


def cmd_push(args) -> int:
    from .classifier import Classifier

    clf = Classifier.from_pretrained(args.model)
    url = clf.push_to_hub(args.repo, private=args.private or None, revision=args.revision,
                          commit_message=args.message)
    print(url)
    return 0


def cmd_bench(args) -> int:
    from .bench import run_benchmark

    run_benchmark(args.model, args.data, images=args.images, repeats=args.repeats, passes=args.passes,
                  as_json=args.json)
    return 0


def cmd_space(args) -> int:
    from .space import prepare_space, push_space

    include = args.include if args.include is not None else [p for p in ("examples",) if Path(p).is_dir()]
    folder = prepare_space(args.out, model_repos=args.models, title=args.title, app_file=args.app_file,
                           package=args.package, include=include)
    print(f"space folder: {folder}")
    if args.push:
        print(push_space(folder, args.push, private=args.private or None))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sports-classifier",
        description="Train, evaluate and serve sports-image classifiers (100 classes, Keras 3).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from .presets import available as available_presets

    p = sub.add_parser("train", help="train a model and write its bundle",
                       description="Train a classifier (frozen backbone + head, then the top convolution "
                       "or the last stages fine-tuned) and write a bundle with metrics, curves and a model card. "
                       "An ensemble preset trains each member into OUT.members/ and averages them.")
    p.add_argument("--data", required=True, help="dataset folder with train/ and valid/ (Kaggle layout)")
    p.add_argument("--out", required=True, help="output bundle folder")
    p.add_argument("--preset", help=f"named recipe: {', '.join(available_presets()) or 'none'}")
    p.add_argument("--config", help="a TrainConfig (or ensemble recipe) JSON file")
    p.add_argument("--backbone", help="efficientnet_lite0 (default), efficientnet_lite1, efficientnet_lite2, "
                   "efficientnet_b0, resnet50, tiny_cnn")
    p.add_argument("--weights", help="imagenet (default), none, or a path to a weights file")
    p.add_argument("--mode", choices=("cached", "end_to_end"), help="cached (default, fast on CPU) or end_to_end")
    p.add_argument("--image-size", type=int)
    p.add_argument("--epochs", type=int, help="head epochs (stage 1)")
    p.add_argument("--fine-tune-stages", type=int,
                   help="stage 2 unfreezes the last N backbone stages; 0 (default): only the top "
                        "convolution (EfficientNet)")
    p.add_argument("--fine-tune-epochs", type=int, help="stage 2 epochs (default 3; 0: head only)")
    p.add_argument("--fine-tune-lr", type=float)
    p.add_argument("--augment-views", type=int, help="cached mode: augmented views cached per image")
    p.add_argument("--no-augment", action="store_true", help="no training augmentation")
    p.add_argument("--tta", action="store_true", default=None, help="average with the mirrored image")
    p.add_argument("--lr", type=float)
    p.add_argument("--dropout", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--classes", help="comma-separated subset of classes (quick experiments)")
    p.add_argument("--max-per-class", type=int, help="at most N images per class and split")
    p.add_argument("--cache-dir", help="feature cache (default $SPORTS_CLASSIFIER_CACHE or ~/.cache/sports_classifier)")
    p.add_argument("--resume", action="store_true",
                   help="continue a run that was interrupted (same options; state in OUT.checkpoint/)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    def model_arg(p):
        p.add_argument("--model", default=default_model(),
                       help="bundle folder or Hub repo id (default: the bundled default model)")
        p.add_argument("--runtime", choices=("auto", "onnx", "keras", "onnx-int8"), default="auto",
                       help="inference engine (auto: ONNX Runtime when the bundle has model.onnx; "
                            "model.int8.onnx first when the bundle carries one)")
        p.add_argument("--revision", help="Hub branch, tag or commit (when --model is a repo id)")

    p = sub.add_parser("evaluate", help="measure a model on a dataset split")
    model_arg(p)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="valid")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict the sport in photos")
    model_arg(p)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("ensemble", help="average trained bundles into one ensemble bundle",
                       description="Average the class probabilities of several trained bundles inside "
                       "one network (one ONNX file), measure it on a split and write its bundle.")
    p.add_argument("--models", nargs="+", required=True, metavar="BUNDLE", help="member bundles (two or more)")
    p.add_argument("--out", required=True, help="output bundle folder")
    p.add_argument("--data", required=True, help="dataset folder to measure the ensemble on")
    p.add_argument("--split", default="valid")
    p.add_argument("--image-size", type=int, help="input size (default: the smallest member's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_ensemble)

    p = sub.add_parser("export", help="add an ONNX (and optional int8) export to a bundle")
    p.add_argument("--model", required=True)
    p.add_argument("--format", nargs="+", choices=("onnx", "onnx-int8", "weights-fp16"), default=["onnx"],
                   help="onnx: float32 ONNX; onnx-int8: quantised copy (served by default); "
                        "weights-fp16: store the Keras weights in float16 (half the size)")
    p.add_argument("--drop-float-onnx", action="store_true",
                   help="leave model.onnx out of the bundle once it has model.int8.onnx (smaller bundle)")
    p.add_argument("--calibration", metavar="DIR",
                   help="onnx-int8: training images to calibrate on (a folder, or a dataset folder "
                        "whose train/ is used); never the split you evaluate on")
    p.add_argument("--calibration-images", type=int, default=200,
                   help="onnx-int8: how many calibration images, spread over the folder (default 200)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="Keras vs ONNX Runtime speed on real images")
    p.add_argument("--model", default=default_model())
    p.add_argument("--data", required=True, help="folder of images (searched recursively)")
    p.add_argument("--images", type=int, default=256, help="images for the batch throughput test")
    p.add_argument("--repeats", type=int, default=50, help="single-image latency samples")
    p.add_argument("--passes", type=int, default=5, help="timed passes per batch measurement (median reported)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("push", help="upload a bundle to the Hugging Face Hub")
    p.add_argument("--model", required=True)
    p.add_argument("--repo", required=True, help="user/name")
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", help="branch to push to")
    p.add_argument("--message", help="commit message")
    p.set_defaults(func=cmd_push)

    # No token flag on purpose: tokens on command lines leak into shell history.
    p = sub.add_parser("space", help="prepare (and optionally push) a Hugging Face Space serving Hub models")
    p.add_argument("--models", nargs="+", required=True, metavar="USER/REPO[@REV]", help="model repos the Space serves")
    p.add_argument("--out", default="space", help="Space folder to write (default: space)")
    p.add_argument("--title", default="Sports Classifier")
    p.add_argument("--app-file", default="app.py", help="the Gradio app to deploy")
    p.add_argument("--include", nargs="*", metavar="PATH", help="more files/folders to copy (default: examples/ if present)")
    p.add_argument("--package", help="requirement line for sports_classifier instead of copying its source")
    p.add_argument("--push", metavar="USER/SPACE", help="upload to this Space (token: HF_TOKEN or `hf auth login`)")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=cmd_space)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("SPORTS_CLASSIFIER_DEBUG") == "1"
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("sports_classifier").setLevel(logging.INFO)  # not tf2onnx's INFO chatter
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (SportsClassifierError, FileNotFoundError, ValueError, OSError) as exc:
        if debug:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1


def one_line(exc: BaseException) -> str:
    """The message on one line: some carry a server's or Keras' multi-line text."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
