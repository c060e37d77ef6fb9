"""The ``sports-classifier`` command line: train, ensemble, evaluate, predict, export, bench, data, feedback, push, space.

The CLI reads its flags and the variables that only it needs (``RAY_ADDRESS``,
``SPORTS_CLASSIFIER_DEBUG``). A few defaults of the library read their own variable where they
are resolved, so that the app and Python callers share them: ``SPORTS_CLASSIFIER_MODEL`` and
``SPORTS_CLASSIFIER_MODELS`` (``hub.default_model``, ``hub.served_models``),
``SPORTS_CLASSIFIER_CACHE`` (``training.features.cache_root``), the upload rate limit
(``app.uploads.RateLimiter``), and Hugging Face's ``HF_TOKEN`` (scrubbed from messages).
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
import warnings
from pathlib import Path

from .errors import SportsClassifierError, UserInputError, install_extra
from .hub import default_model
from .runtime import RUNTIMES
from .version import __version__

def _train_recipe(args):
    """The TrainConfig (or ensemble recipe) that --preset / --config and the flags describe."""
    from .config import TrainConfig
    from .training.recipes import EnsembleRecipe, named_recipe, load_recipe

    if args.recipe and args.config:
        raise UserInputError("give --recipe or --config, not both")
    if args.recipe:
        recipe = named_recipe(args.recipe)
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
        "tta_flip": args.tta, "distill_from": args.distill_from,
        "distill_temperature": args.distill_temperature, "distill_weight": args.distill_weight,
        "classes": tuple(c.strip() for c in args.classes.split(",")) if args.classes else None,
    }
    if args.no_augment:
        overrides["augment"] = False
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(recipe, EnsembleRecipe):
        if overrides:
            raise UserInputError(
                f"an ensemble recipe takes no training options (got {', '.join(sorted(overrides))}); "
                "change its members' recipes instead")
        return recipe
    return recipe.replace(**overrides)


def cmd_train(args) -> int:
    from .bundle import read_metrics
    from .training.ensemble import members_folder, train_ensemble
    from .training.recipes import EnsembleRecipe
    from .training.loop import train

    recipe = _train_recipe(args)
    if isinstance(recipe, EnsembleRecipe):
        start = time.perf_counter()
        out = train_ensemble(recipe.members, args.data, args.out, cache_dir=args.cache_dir,
                             progress=not args.quiet, resume=args.resume)
        print(f"bundle: {out} (members in {members_folder(out)})")
        _print_valid(read_metrics(out))
        print(f"time: {time.perf_counter() - start:.1f} s")
        return 0
    if args.executor == "ray" and getattr(recipe, "mode", None) == "end_to_end":
        return _train_on_ray(recipe, args)
    if args.workers not in (None, 1):
        raise UserInputError("--workers N trains on a Ray cluster: add --executor ray")
    distributed = None
    if args.strategy == "mirrored":  # every GPU of this machine (one replica on a CPU)
        import tensorflow as tf

        from .training.loop import Distributed

        distributed = Distributed(tf.distribute.MirroredStrategy())
    feature_executor = None
    if args.executor == "ray":  # the cached mode's feature cache, computed on Ray Data
        feature_executor = _ray("ray_features").RayFeatureExecutor(_ray_address(args))
    result = train(recipe, args.data, args.out, cache_dir=args.cache_dir, progress=not args.quiet,
                   resume=args.resume, distributed=distributed, feature_executor=feature_executor)
    print(f"bundle: {result.bundle}")
    _print_valid(result.metrics)
    print(f"time: {result.seconds:.1f} s (feature cache: {result.cache_hits} hit(s), "
          f"{result.cache_misses} computed)")
    return 0


def _ray(module: str):
    """``sports_classifier.distributed.<module>``, or a one-line error naming the extra."""
    import importlib

    try:
        return importlib.import_module(f".distributed.{module}", __package__)
    except ImportError as exc:
        raise UserInputError(f"--executor ray needs Ray ({exc}): {install_extra('ray')}") from None


def _ray_address(args) -> str | None:
    return args.ray_address or os.environ.get("RAY_ADDRESS") or None


def _train_on_ray(recipe, args) -> int:
    from .training.recipes import EnsembleRecipe

    if isinstance(recipe, EnsembleRecipe) or args.strategy:
        raise UserInputError("--executor ray trains one end-to-end model (no ensemble recipe, no --strategy)")
    train_on_ray = _ray("ray_train").train_on_ray

    report = train_on_ray(recipe, args.data, args.out, workers=args.workers or 1, address=_ray_address(args),
                          cpus_per_worker=args.cpus_per_worker, use_gpu=args.gpu, cache_dir=args.cache_dir,
                          progress=not args.quiet, resume=args.resume, tf_port=args.tf_port)
    print(f"bundle: {report['bundle']} ({report['workers']} Ray workers)")
    _print_valid(report["metrics"])
    print(f"time: {report['seconds']:.1f} s (Ray start-up {report['ray_startup_s']:.1f} s)")
    return 0


def cmd_ensemble(args) -> int:
    from .bundle import read_metrics
    from .training.ensemble import combine

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

    if not args.model:
        raise UserInputError("no --model given and no bundled default model (models/DEFAULT) found")
    return Classifier.from_pretrained(args.model, runtime=args.runtime, revision=getattr(args, "revision", None),
                                      token=getattr(args, "token", None))


def cmd_evaluate(args) -> int:
    from .metrics import summary

    clf = _load(args)
    metrics = clf.evaluate(args.data, split=args.split, progress=not args.json)
    if args.write:
        from .bundle import update_metrics

        update_metrics(clf.path, args.split, metrics)
    head = summary(metrics)
    if args.json:
        print(json.dumps(head | {"split": args.split, "skipped": metrics["skipped"], "engine": metrics["engine"],
                                 "measured_on": metrics["measured_on"], "selfcheck": metrics.get("selfcheck")}))
    else:
        from .hardware import describe

        print(f"{args.split}: {head['n']} images  accuracy {head['accuracy']:.4f}  "
              f"top-5 {head['top5_accuracy']:.4f}  macro F1 {head['macro_f1']:.4f}  loss {head['loss']:.4f}")
        print(printable(f"served by {metrics['engine']} ({clf.serving_note}); measured on "
                        f"{describe(metrics['measured_on'])}"))
        worst = sorted(metrics["per_class"].items(), key=lambda kv: kv[1]["f1"])[:5]
        print("lowest F1: " + ", ".join(f"{printable(k)} {v['f1']:.2f}" for k, v in worst))
    return 0


def cmd_predict(args) -> int:
    if args.input or args.output:
        return cmd_predict_batch(args)
    if not args.images:
        raise UserInputError("give image files, or --input SRC --output OUT.parquet for a batch")
    clf = _load(args)
    failed = 0
    results = []
    for p in clf.predict_files(args.images, top_k=args.top_k):
        if not p.ok:
            failed += 1
            print(f"error: {one_line(p.error)}", file=sys.stderr)
            continue
        if args.json:
            results.append({"image": p.source, "ood": p.ood,
                            "predictions": [{"label": l, "probability": prob} for l, prob in p.top]})
        else:
            note = "  (probably none of the sports)" if p.ood else ""
            print(f"{printable(p.source)}: " + ", ".join(f"{printable(l)} {prob:.1%}" for l, prob in p.top) + note)
    if args.json:
        print(json.dumps(results))
    return 1 if failed else 0


def cmd_predict_batch(args) -> int:
    from .batch import predict_dataset

    if not (args.input and args.output) or args.images:
        raise UserInputError("a batch takes --input SRC and --output OUT (and no image arguments)")
    if not args.model:
        raise UserInputError("no --model given and no bundled default model (models/DEFAULT) found")
    executor = None  # batch's own LocalExecutor
    if args.executor == "ray":
        executor = _ray("ray_batch").RayExecutor(_ray_address(args), workers=args.workers,
                                                 cpus_per_worker=args.cpus_per_worker)
    result = predict_dataset(
        args.model, args.input, args.output, top_k=args.top_k, executor=executor, fmt=args.format,
        shard_size=args.shard_size, batch_size=args.batch_size, runtime=args.runtime, progress=not args.json,
        overwrite=args.overwrite)
    summary = {"output": str(result.output), "rows": result.rows, "errors": result.errors,
               "shards": result.shards, "shards_reused": result.shards_skipped, "executor": result.executor,
               "seconds": round(result.seconds, 2), "images_per_second": round(result.images_per_second, 1)}
    print(json.dumps(summary) if args.json else
          f"{result.output}: {result.rows} rows ({result.errors} unreadable), {result.shards} shard(s), "
          f"{result.shards_skipped} reused from an earlier run, {result.seconds:.1f} s")
    # The table is complete either way; like `predict IMAGE...`, a file that could not be read
    # makes the exit status 1, so a pipeline notices without parsing the table.
    return 1 if result.errors else 0


def cmd_threshold(args) -> int:
    from .ood import choose_threshold_for, write_threshold

    clf = _load(args)
    choice = choose_threshold_for(clf, args.data, split=args.split, max_false_flag=args.max_false_flag,
                                  progress=not args.quiet)
    print(choice["justification"])
    if args.write:
        write_threshold(clf.path, choice)
        print(f"written to {clf.path}/config.json (out_of_distribution)")
    return 0


def cmd_export(args) -> int:
    from .training.export import export_bundle

    report = export_bundle(args.model, formats=args.format, calibration=args.calibration,
                           calibration_images=args.calibration_images, drop_float_onnx=args.drop_float_onnx)
    for line in report:
        print(line)
    return 0


def cmd_push(args) -> int:
    from .classifier import Classifier

    clf = Classifier.from_pretrained(args.model)
    card = "keep" if args.keep_card else "overwrite" if args.overwrite_card else "refuse"
    url = clf.push_to_hub(args.repo, private=args.private or None, revision=args.revision,
                          commit_message=args.message, token=args.token, existing_card=card,
                          progress=not args.quiet)
    print(url)
    return 0


def cmd_bench(args) -> int:
    if args.models:
        from .speed_accuracy import run_comparison

        run_comparison(args.models, args.data, repeats=args.repeats, passes=args.passes, as_json=args.json,
                       plot=args.plot, progress=not args.quiet)
        return 0
    from .bench import run_benchmark

    run_benchmark(args.model, args.data, images=args.images, repeats=args.repeats, passes=args.passes,
                  as_json=args.json, progress=not args.quiet)
    return 0


def cmd_data(args) -> int:
    from .data_summary import record_counts, summarize, summary_lines
    from .plots import class_distribution_png

    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    summary = summarize(args.data, splits, max_per_class=args.max_per_class)
    for line in summary_lines(summary):
        print(printable(line))
    first = summary.splits[0]
    out = Path(args.chart)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(class_distribution_png(first.counts, title=f"{Path(args.data).name}: {first.name} images per class"))
    print(f"chart: {out}")
    for bundle_path in args.record_in or []:
        record_counts(bundle_path, summary)
        print(f"recorded class counts in {bundle_path}")
    return 0


def cmd_feedback(args) -> int:
    from .feedback import FEEDBACK_REPO_ENV, FeedbackStore, summary_lines

    store = FeedbackStore(args.dir, repo_id=args.repo or os.environ.get(FEEDBACK_REPO_ENV) or None)
    if args.action == "list":
        for line in summary_lines(store.records()):
            print(printable(line))
        return 0
    if args.action == "push":
        count = store.push(token=args.token)
        print(f"pushed {count} record(s) from {store.folder} to the Hub dataset repo {store.repo_id}")
        return 0
    if not args.out:
        raise UserInputError("feedback export needs --out FOLDER (a new dataset folder)")
    counts = store.export(args.out, valid_fraction=args.valid_fraction)
    for split, per_label in counts.items():
        print(f"{split}: {sum(per_label.values())} photo(s) in {len(per_label)} class folder(s)")
    print(f"dataset: {args.out} (sports-classifier train --data {args.out} ...)")
    return 0


def cmd_space(args) -> int:
    from .space import prepare_space, push_space

    include = args.include if args.include is not None else [p for p in ("examples",) if Path(p).is_dir()]
    folder = prepare_space(args.out, model_repos=args.models, title=args.title, app_file=args.app_file,
                           package=args.package, include=include, sdk_version=args.sdk_version,
                           token=args.token)
    print(f"space folder: {folder}")
    if args.push:
        print(push_space(folder, args.push, private=args.private or None, token=args.token))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sports-classifier",
        description="Train, evaluate and serve sports-image classifiers (100 classes, Keras 3).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_evaluate, _add_predict, _add_threshold, _add_ensemble, _add_export, _add_bench,
                _add_data, _add_feedback, _add_push, _add_space):
        add(sub)
    return parser


def _model_args(p) -> None:
    p.add_argument("--model", default=default_model(),
                   help="bundle folder or Hub repo id (default: the bundled default model)")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="inference engine (auto: ONNX Runtime when the bundle has model.onnx; "
                        "model.int8.onnx first when the bundle carries one)")
    p.add_argument("--revision", help="Hub branch, tag or commit (when --model is a repo id)")
    _token_arg(p, "read")


def _token_arg(p, access: str) -> None:
    p.add_argument("--token", help=f"Hugging Face token with {access} access (default: HF_TOKEN or "
                   "`hf auth login`; a token on the command line stays in the shell history)")


def _add_train(sub) -> None:
    from .models.backbones import available_backbones
    from .training.recipes import available as available_recipes

    p = sub.add_parser("train", help="train a model and write its bundle",
                       description="Train a classifier (frozen backbone + head, then the top convolution "
                       "or the last stages fine-tuned) and write a bundle with metrics, curves and a model card. "
                       "An ensemble recipe trains each member into OUT.members/ and averages them.")
    p.add_argument("--data", required=True, help="dataset folder with train/ and valid/ (Kaggle layout)")
    p.add_argument("--out", required=True, help="output bundle folder")
    p.add_argument("--recipe", "--preset", dest="recipe",
                   help=f"named recipe: {', '.join(available_recipes()) or 'none'}")
    p.add_argument("--config", help="a TrainConfig (or ensemble recipe) JSON file")
    # Checked by the backbone catalogue, not by argparse: its error names the choices in one `error:` line.
    p.add_argument("--backbone", help=f"one of {', '.join(available_backbones())} (default efficientnet_lite0)")
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
    p.add_argument("--distill-from", metavar="BUNDLE",
                   help="teacher bundle (path or hf:user/repo): train to match its probabilities")
    p.add_argument("--distill-temperature", type=float, help="softening temperature (default 2)")
    p.add_argument("--distill-weight", type=float,
                   help="weight of the teacher term against the labels, 0-1 (default 0.7)")
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
    d = p.add_argument_group("data-parallel training, --mode end_to_end (docs/scale.md)")
    # --engine: the old spelling, still accepted; "engine" now means only the ONNX/Keras runtime.
    d.add_argument("--executor", "--engine", dest="executor", choices=("local", "ray"), default="local",
                   help="ray: end_to_end on Ray Train workers; cached: the feature cache computed on Ray Data")
    d.add_argument("--workers", type=int, help="Ray Train workers; --batch-size is split over them")
    d.add_argument("--ray-address", help="Ray cluster (default $RAY_ADDRESS; auto: the running one)")
    d.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs each Ray worker claims")
    d.add_argument("--gpu", action="store_true", help="one GPU per Ray worker")
    d.add_argument("--tf-port", type=int, help="worker i listens for TensorFlow's collectives on this port + i "
                   "(default: ports Ray picks)")
    d.add_argument("--strategy", choices=("mirrored",), help="mirrored: every GPU of this machine, no Ray")
    p.set_defaults(func=cmd_train)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="measure a model on a dataset split")
    _model_args(p)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="valid")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--write", action="store_true",
                   help="store the figures in the bundle's metrics.json and model card as the split's "
                        "(after an int8 export: the model as served); figures measured with another "
                        "engine are kept beside them")
    p.set_defaults(func=cmd_evaluate)


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="predict the sport in photos")
    _model_args(p)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.add_argument("images", nargs="*", metavar="IMAGE")
    b = p.add_argument_group("batch (a table out, resumable; docs/scale.md)")
    b.add_argument("--input", metavar="SRC", help="folder (recursive), glob, or CSV/Parquet manifest with a path column")
    b.add_argument("--output", metavar="OUT", help="OUT.parquet (or .csv); shards in OUT.parts/. Unreadable "
                   "files get a row with an error (exit status 1 once the table is written)")
    b.add_argument("--format", choices=("parquet", "csv"), help="default: from OUT's suffix, else parquet")
    b.add_argument("--overwrite", action="store_true", help="replace OUT when it exists and no batch run wrote it")
    b.add_argument("--executor", "--engine", dest="executor", choices=("local", "ray"), default="local",
                   help="local (default) or a Ray cluster (--engine: the old spelling)")
    b.add_argument("--ray-address", help="Ray cluster (default $RAY_ADDRESS; auto: the running one)")
    b.add_argument("--workers", type=int, help="Ray actors (default: the cluster's CPUs)")
    b.add_argument("--cpus-per-worker", type=float, default=0.5, help="CPUs each Ray actor claims (default 0.5)")
    b.add_argument("--shard-size", type=int, default=1000, help="files per shard, the unit a rerun skips")
    b.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=cmd_predict)


def _add_threshold(sub) -> None:
    p = sub.add_parser("threshold", help="choose a model's out-of-distribution threshold",
                       description="Choose the top-probability threshold under which a photo is called "
                       "'probably none of the sports', on a split's images against non-sport photos that ship "
                       "with scikit-image and matplotlib, and (with --write) store it in the bundle's config.json.")
    _model_args(p)
    p.add_argument("--data", required=True, help="dataset folder holding the split")
    p.add_argument("--split", default="valid")
    p.add_argument("--max-false-flag", type=float, default=0.05,
                   help="most of the split's images the threshold may flag (default 0.05)")
    p.add_argument("--write", action="store_true", help="store it in the bundle (else only print it)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_threshold)


def _add_ensemble(sub) -> None:
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


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="add an ONNX (and optional int8) export to a bundle")
    p.add_argument("--model", required=True)
    p.add_argument("--format", nargs="+", choices=("onnx", "onnx-fp16", "onnx-int8", "weights-fp16"),
                   default=["onnx"],
                   help="onnx: float32 ONNX; onnx-fp16: the same with its weights stored in float16 (half "
                        "the size, float32 arithmetic); onnx-int8: 7-bit-weight int8 copy with its "
                        "self-check (served by default; the float ONNX model serves where the check "
                        "fails); weights-fp16: store the Keras weights in float16 (half the size)")
    p.add_argument("--drop-float-onnx", action="store_true",
                   help="leave model.onnx out of the bundle once it has model.int8.onnx (smaller bundle)")
    p.add_argument("--calibration", metavar="DIR",
                   help="onnx-int8: training images to calibrate on (a folder, or a dataset folder "
                        "whose train/ is used); never the split you evaluate on")
    p.add_argument("--calibration-images", type=int, default=200,
                   help="onnx-int8: how many calibration images, spread over the folder (default 200)")
    p.set_defaults(func=cmd_export)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="Keras vs ONNX Runtime speed on real images; or accuracy against "
                                     "speed of several models (--models)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--model", default=default_model(), help="one bundle: its engines side by side")
    group.add_argument("--models", nargs="+", metavar="BUNDLE",
                       help="several bundles as served: accuracy (each file's folder is its class) and speed")
    p.add_argument("--plot", metavar="PNG", help="with --models: write the accuracy-against-speed chart")
    p.add_argument("--data", required=True, help="folder of images (searched recursively)")
    p.add_argument("--images", type=int, default=256, help="images for the batch throughput test")
    p.add_argument("--repeats", type=int, default=50, help="single-image latency samples")
    p.add_argument("--passes", type=int, default=5, help="timed passes per batch measurement (median reported)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar (it goes to stderr)")
    p.set_defaults(func=cmd_bench)


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="images per split and class, skipped files, class-distribution chart")
    p.add_argument("--data", required=True, help="dataset folder (<split>/<class>/<image>)")
    p.add_argument("--splits", default="train,valid", help="splits to count (default: train,valid; test is held out)")
    p.add_argument("--chart", default="class_distribution.png", help="where to write the chart of the first split")
    p.add_argument("--max-per-class", type=int, help="count only the first N training images per class, "
                   "as training's --max-per-class does")
    p.add_argument("--record-in", nargs="*", metavar="BUNDLE",
                   help="write the class counts into bundles trained on this data (older bundles lack them)")
    p.set_defaults(func=cmd_data)



def _add_feedback(sub) -> None:
    p = sub.add_parser("feedback", help="the app's \"Was this right?\" records: list them, export a dataset "
                       "folder, or push them to a Hub dataset repo")
    p.add_argument("action", choices=("list", "export", "push"))
    p.add_argument("--dir", help="the feedback folder (default: $SPORTS_CLASSIFIER_FEEDBACK, else feedback/)")
    p.add_argument("--out", help="export: the dataset folder to write (<split>/<sport>/<photo>), new or empty")
    p.add_argument("--valid-fraction", type=float, default=0.2,
                   help="export: share of each sport's photos put in valid/ (each keeps one for train)")
    p.add_argument("--repo", metavar="USER/NAME",
                   help="push: the Hub dataset repo, created private if new (default: $SPORTS_CLASSIFIER_FEEDBACK_REPO)")
    _token_arg(p, "write")
    p.set_defaults(func=cmd_feedback)


def _add_push(sub) -> None:
    p = sub.add_parser("push", help="upload a bundle to the Hugging Face Hub")
    p.add_argument("--model", required=True)
    p.add_argument("--repo", required=True, help="user/name")
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", help="branch to push to")
    p.add_argument("--message", help="commit message")
    _token_arg(p, "write")
    card = p.add_mutually_exclusive_group()
    card.add_argument("--keep-card", action="store_true",
                      help="the repo's README.md was edited on the Hub: upload the bundle, leave it as it is")
    card.add_argument("--overwrite-card", action="store_true",
                      help="the repo's README.md was edited on the Hub: replace it with the generated card")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_push)


def _add_space(sub) -> None:
    p = sub.add_parser("space", help="prepare (and optionally push) a Hugging Face Space serving Hub models")
    p.add_argument("--models", nargs="+", required=True, metavar="USER/REPO[@REV]", help="model repos the Space serves")
    p.add_argument("--out", default="space", help="Space folder to write (default: space)")
    p.add_argument("--title", default="Sports Classifier")
    p.add_argument("--app-file", default="app.py", help="the Gradio app to deploy")
    p.add_argument("--include", nargs="*", metavar="PATH", help="more files/folders to copy (default: examples/ if present)")
    p.add_argument("--package", help="requirement line for sports_classifier instead of copying its source")
    p.add_argument("--push", metavar="USER/SPACE", help="upload to this Space (token: --token, HF_TOKEN or `hf auth login`)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--sdk-version", help="the Gradio version the Space runs (default: the installed Gradio)")
    _token_arg(p, "write (read for private models)")
    p.set_defaults(func=cmd_space)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("SPORTS_CLASSIFIER_DEBUG") == "1"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter("%(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("sports_classifier").setLevel(logging.INFO)  # not tf2onnx's INFO chatter
    # Warnings meant for users (an int8 model that failed its self-check here) read as one line.
    warnings.showwarning = lambda message, *_args, **_kw: print(f"warning: {one_line(message)}", file=sys.stderr)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:  # an install without the extra this command needs
        extra = EXTRAS.get((exc.name or "").partition(".")[0])
        if debug or extra is None:
            raise
        print(f"error: {args.command} needs {exc.name}, which this install lacks: "
              f"{install_extra(extra)}", file=sys.stderr)
        return 1
    except (SportsClassifierError, OSError) as exc:  # anything else is a bug: its traceback shows
        if debug:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1


# The optional packages and the pyproject.toml extra that installs each.
EXTRAS = {"tensorflow": "train", "keras": "train", "tf2onnx": "train", "onnx": "train", "skimage": "train",
          "sympy": "train", "gradio": "app", "ray": "ray", "pyarrow": "ray"}


def one_line(exc: BaseException | str) -> str:
    """The message on one line (some carry a server's or Keras' multi-line text), with
    terminal control characters made visible."""
    return printable(" ".join(line.strip() for line in str(exc).splitlines() if line.strip()))


class PrintableFormatter(logging.Formatter):
    """Log lines with control characters escaped (``printable``): warnings quote file names and
    labels ("skipped 1 unreadable image(s) ...; first: <name>"), which may hold terminal escapes."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))


def printable(text: str) -> str:
    """``text`` with control characters (terminal escapes, newlines) written as escapes: labels
    and file names come from bundles and folders a user may not have written."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))
