"""Accuracy against speed for several bundles, measured in one run (``sports-classifier bench
--models A B ... --data DATA/valid``).

Each model is served as it would be (``runtime="auto"``: its int8 ONNX model when it has one)
in its own worker process (``bench``'s workers), all loaded before timing starts; the timed
passes are interleaved between models so a change in the machine's load hits every model alike.
Accuracy is measured in the same run on the same files: each file's class is its folder name
(the Kaggle layout of ``valid/``), compared with the model's top-1 answer on the timed pass.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

from .bench import BATCH, ServingProcess, find_images, latency_summary, load_average, machine, throughput_summary
from .errors import UserInputError


def run_comparison(models: Sequence[str | Path], data: str | Path, *, repeats: int = 50, passes: int = 3,
                   as_json: bool = False, plot: str | Path | None = None, progress: bool = False) -> dict:
    """Images/s (JPEG paths, batch 32, decoding included), single-image latency and top-1
    accuracy of each model in ``models`` on every JPEG under ``data``. Prints a table (or JSON),
    writes an accuracy-against-speed chart to ``plot`` when given, and returns the dict.
    ``progress``: a bar on stderr (each model loaded, then each pass).

    Raises:
        UserInputError: fewer than one model, a repeated model, or non-positive counts.
        DatasetLayoutError: no JPEG files under ``data``.
    """
    from tqdm.auto import tqdm

    from . import bundle

    names = [str(m) for m in models]
    if not names or len(set(names)) != len(names):
        raise UserInputError("give one or more distinct model bundles")
    if repeats < 1 or passes < 1:
        raise UserInputError("repeats and passes must be positive")
    for name in names:
        bundle.read_config(name)  # a clear error for a bad folder before any process starts
    paths = find_images(data)
    truth = [Path(p).parent.name for p in paths]
    result = {"data": str(data), "images": len(paths), "batch_size": BATCH, "passes": passes,
              "repeats": repeats, "machine": machine(), "load_start": load_average(), "models": {}}
    workers: dict[str, ServingProcess] = {}
    raw: dict[str, dict[str, list]] = {n: {"predict_paths": [], "latency_predict": []} for n in names}
    bar = tqdm(total=len(names) + passes, desc="bench", unit="step", disable=not progress, file=sys.stderr)
    try:
        for name in names:  # all loaded and warmed up before any timing starts
            bar.set_postfix_str(f"loading {Path(name).name}")
            workers[name] = ServingProcess("auto")
            workers[name].ask(cmd="start", model=name, runtime="auto", paths=paths)
            bar.update()
        for p in range(passes):
            bar.set_postfix_str(f"pass {p + 1}/{passes}")
            for name, worker in workers.items():
                raw[name]["predict_paths"].append(worker.ask(cmd="throughput", what="predict_paths"))
            count = repeats // passes + (1 if p < repeats % passes else 0)
            for name, worker in workers.items():
                if count:
                    raw[name]["latency_predict"].extend(
                        worker.ask(cmd="latency", what="latency_predict", count=count)["times"])
            bar.update()
        bar.close()
        for name, worker in workers.items():
            summary = worker.ask(cmd="summary")
            correct = sum(t == p for t, p in zip(truth, summary["top1"]))
            result["models"][name] = {
                "engine": summary["engine"],
                "accuracy": round(correct / len(paths), 4),
                "predict_paths": throughput_summary(raw[name]["predict_paths"], len(paths)),
                "latency_predict": latency_summary(raw[name]["latency_predict"]),
                "peak_rss_mb": summary["peak_rss_mb"],
                "size_mb": round(_served_size(name) / 2**20, 3),
            }
    finally:
        bar.close()
        for worker in workers.values():
            worker.close()
    result["load_end"] = load_average()
    if plot:
        write_chart(result, plot)
    print(json.dumps(result, indent=2) if as_json else format_comparison(result))
    return result


def write_chart(result: dict, path: str | Path) -> None:
    """The comparison as the app's accuracy-against-speed chart (``plots.speed_accuracy_png``),
    speed as batch throughput turned into ms per image."""
    from .hardware import describe
    from .plots import speed_accuracy_png, write_png

    points = [(Path(name).name, 1000.0 / r["predict_paths"]["images_per_s"], r["accuracy"])
              for name, r in result["models"].items()]
    m = result["machine"]
    write_png(speed_accuracy_png(
        points, title=f"Top-1 accuracy on {result['images']} validation images vs speed, as served\n"
                      f"on {describe(m)}",
        xlabel=f"ms per image: JPEG paths in batches of {result['batch_size']}, decoding included, "
               f"{m['physical_cores']} CPU cores (lower is faster)"))(path)


def _served_size(model: str | Path) -> int:
    """Bytes of the model files serving reads (``runtime="auto"``: ``bundle.served_model_files``):
    not the bundle's other files (Keras weights an ONNX model does not use, pictures)."""
    from . import bundle

    files = (bundle.member(model, name) for name in bundle.served_model_files(bundle.read_config(model), folder=model))
    return sum(file.stat().st_size for file in files if file is not None)


def format_comparison(result: dict) -> str:
    from .hardware import describe

    m = result["machine"]
    lines = [
        f"{result['images']} images from {result['data']}; {describe(m)}, {m['physical_cores']} physical cores; "
        f"1-min load average {result['load_start']} at start, {result['load_end']} at end; "
        f"{result['passes']} interleaved passes, {result['repeats']} single images per model",
        "",
        f"{'model':34}{'engine':>18}{'accuracy':>10}{'img/s':>9}{'1 img ms':>10}{'p95 ms':>9}{'MB':>7}",
    ]
    for name, r in result["models"].items():
        lines.append(f"{Path(name).name:34}{r['engine']:>18}{r['accuracy'] * 100:>9.1f}%"
                     f"{r['predict_paths']['images_per_s']:>9.1f}{r['latency_predict']['median_ms']:>10.2f}"
                     f"{r['latency_predict']['p95_ms']:>9.2f}{r['size_mb']:>7.1f}")
    return "\n".join(lines)
