"""Keras vs ONNX Runtime, side by side on real images (``sports-classifier bench``).

One run measures, for each engine, on the same JPEG files:

* batch throughput at batch 32 (images/s): Keras ``model.predict`` on already decoded arrays
  (the baseline), and ``Classifier.predict`` on the list of JPEG paths, decoding included;
* single-image latency end to end (decode + preprocess + model), median and p95;
* peak memory (peak RSS of the process).

Each engine runs in its own fresh Python process, one after the other, so that peak RSS is
that engine's own (the ONNX process never imports TensorFlow) and one engine's thread pools
and caches cannot slow the other. Every measurement is preceded by a warm-up. On a shared
machine the figures move with the load, which is recorded (1-minute load average) before and
after each engine; compare ratios from one run, not figures from different runs.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .errors import DatasetLayoutError

BATCH = 32
IMAGE_SUFFIXES = (".jpg", ".jpeg")
TARGETS = {"speedup_vs_keras_predict": 4.0, "images_per_s": 120.0, "latency_median_ms": 15.0}


def find_images(data: str | Path) -> list[str]:
    """JPEG files under ``data`` (recursively), in a fixed order."""
    root = Path(data)
    if not root.is_dir():
        raise DatasetLayoutError(f"{data} is not a folder of images")
    paths = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise DatasetLayoutError(f"no JPEG files under {data}")
    return paths


def _pick(paths: list[str], n: int) -> list[str]:
    """``n`` files spread evenly over the sorted list (so over the classes); repeated if short."""
    if n <= len(paths):
        idx = np.linspace(0, len(paths) - 1, n).round().astype(int)
        return [paths[i] for i in idx]
    return [paths[i % len(paths)] for i in range(n)]


def machine() -> dict:
    from .runtime import physical_cores

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "physical_cores": physical_cores(),
            "python": platform.python_version(), "platform": platform.platform()}


def _load() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return float("nan")


def _throughput(fn, n_images: int, passes: int) -> dict:
    times = []
    for _ in range(passes):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"images_per_s": round(n_images / float(np.median(times)), 1),
            "passes_s": [round(t, 3) for t in times]}


def _latency(fn, paths: list[str], repeats: int) -> dict:
    for p in paths[:3]:  # warm-up
        fn(p)
    times = []
    for i in range(repeats):
        p = paths[i % len(paths)]
        t0 = time.perf_counter()
        fn(p)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1e3
    return {"median_ms": round(float(np.median(ms)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "min_ms": round(float(ms.min()), 2), "n": repeats}


def measure_engine(model: str, runtime: str, paths: list[str], *, repeats: int, passes: int) -> dict:
    """Measure one engine in this process (``run_benchmark`` calls it in a fresh process)."""
    from .classifier import Classifier
    from .images import preprocess, preprocess_batch

    out: dict = {"runtime": runtime, "load_before": _load()}
    t0 = time.perf_counter()
    clf = Classifier.from_pretrained(model, runtime=runtime)
    out["engine"] = clf.runtime
    out["load_s"] = round(time.perf_counter() - t0, 2)
    size = clf.config.image_size
    n = len(paths)

    # End to end: Classifier.predict on the list of JPEG paths (decode included), batch 32.
    warm = paths[: min(BATCH, n)]
    clf.predict(warm)
    out["rss_after_load_mb"] = _rss_mb()
    preds = []
    out["predict_paths"] = _throughput(lambda: preds.append(clf.predict(paths)), n, passes)
    out["top1"] = [p[0][0] for p in preds[-1]]

    # Where the time goes: decoding alone, and the engine alone on decoded arrays.
    out["decode_only"] = _throughput(lambda: preprocess_batch(paths, size), n, passes)
    pixels = preprocess_batch(paths, size)
    out["engine_on_arrays"] = _throughput(lambda: clf.engine(pixels), n, passes)

    # Single image, end to end.
    out["latency_predict"] = _latency(lambda p: clf.predict(p), paths, repeats)

    if clf.runtime == "keras":
        # The baseline: Keras model.predict, batch 32, on decoded arrays; and one image at a time.
        net = clf.keras_model
        net.predict(pixels[:BATCH], batch_size=BATCH, verbose=0)
        out["keras_predict_arrays"] = _throughput(
            lambda: net.predict(pixels, batch_size=BATCH, verbose=0), n, passes)
        out["latency_keras_predict"] = _latency(
            lambda p: net.predict(preprocess(p, size)[None], verbose=0), paths, repeats)
        import tensorflow as tf

        out["versions"] = {"tensorflow": tf.__version__, "keras": __import__("keras").__version__}
    else:
        import onnxruntime as ort

        out["versions"] = {"onnxruntime": ort.__version__}
        out["threads"] = clf.engine.session.get_session_options().intra_op_num_threads
    out["versions"]["numpy"] = np.__version__
    out["peak_rss_mb"] = _peak_rss_mb()
    out["tensorflow_imported"] = "tensorflow" in sys.modules
    out["load_after"] = _load()
    return out


def _run_worker(model: str, runtime: str, paths: list[str], repeats: int, passes: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.json"
        result = Path(tmp) / "result.json"
        spec.write_text(json.dumps({"model": str(model), "runtime": runtime, "paths": paths,
                                    "repeats": repeats, "passes": passes, "out": str(result)}))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.run([sys.executable, "-m", "sports_classifier.bench", str(spec)],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not result.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise RuntimeError(f"benchmark of runtime {runtime!r} failed: " + " | ".join(tail))
        return json.loads(result.read_text())


def _ratio(a, b) -> float | None:
    return round(a / b, 2) if a and b else None


def run_benchmark(model, data, *, images: int = 256, repeats: int = 50, as_json: bool = False,
                  passes: int = 3, runtimes: tuple[str, ...] | None = None) -> dict:
    """Benchmark Keras against ONNX Runtime (and the int8 model when the bundle has one) on
    ``images`` JPEG files found under ``data``; print a table (or JSON) and return the dict."""
    from . import bundle

    if images < 1 or repeats < 1 or passes < 1:
        raise ValueError("images, repeats and passes must be positive")
    config = bundle.read_config(model)
    found = find_images(data)
    paths = _pick(found, images)
    if runtimes is None:
        runtimes = ("keras",)
        if bundle.has_onnx(model, config):
            runtimes += ("onnx",)
        if (Path(model) / bundle.ONNX_INT8).is_file() and bundle.ONNX_INT8 in config.files_sha256:
            runtimes += ("onnx-int8",)
    result = {
        "model": str(model), "backbone": config.backbone, "image_size": config.image_size,
        "data": str(data), "images": len(paths), "distinct_images": len(set(paths)),
        "batch_size": BATCH, "repeats": repeats, "passes": passes, "machine": machine(),
        "load_start": _load(), "engines": {},
    }
    for runtime in runtimes:
        result["engines"][runtime] = _run_worker(str(model), runtime, paths, repeats, passes)
    result["load_end"] = _load()
    result["ratios"] = _ratios(result["engines"])
    result["targets"] = _targets(result)
    print(json.dumps(result, indent=2) if as_json else format_table(result))
    return result


def _ratios(engines: dict) -> dict:
    keras = engines.get("keras")
    out = {}
    if not keras:
        return out
    base_ips = keras["keras_predict_arrays"]["images_per_s"]
    for name, e in engines.items():
        if name == "keras":
            continue
        agree = np.mean([a == b for a, b in zip(e["top1"], keras["top1"])]) if e["top1"] else None
        out[name] = {
            # how many times faster (>1: this engine wins)
            "throughput_vs_keras_predict": _ratio(e["predict_paths"]["images_per_s"], base_ips),
            "throughput_vs_keras_classifier": _ratio(e["predict_paths"]["images_per_s"],
                                                     keras["predict_paths"]["images_per_s"]),
            "latency_vs_keras_predict": _ratio(keras["latency_keras_predict"]["median_ms"],
                                               e["latency_predict"]["median_ms"]),
            "latency_vs_keras_classifier": _ratio(keras["latency_predict"]["median_ms"],
                                                  e["latency_predict"]["median_ms"]),
            # this engine's memory as a fraction of Keras's
            "peak_rss_vs_keras": _ratio(e["peak_rss_mb"], keras["peak_rss_mb"]),
            "top1_agreement_with_keras": None if agree is None else round(float(agree), 4),
        }
    return out


def _targets(result: dict) -> dict:
    onnx = result["engines"].get("onnx")
    if not onnx:
        return {}
    speedup = result["ratios"].get("onnx", {}).get("throughput_vs_keras_predict")
    ips = onnx["predict_paths"]["images_per_s"]
    lat = onnx["latency_predict"]["median_ms"]
    return {
        f"onnx >= {TARGETS['speedup_vs_keras_predict']:g}x Keras predict": bool(
            speedup and speedup >= TARGETS["speedup_vs_keras_predict"]),
        f"onnx >= {TARGETS['images_per_s']:g} images/s end to end": ips >= TARGETS["images_per_s"],
        f"onnx median latency < {TARGETS['latency_median_ms']:g} ms": lat < TARGETS["latency_median_ms"],
    }


def format_table(result: dict) -> str:
    engines = result["engines"]
    m = result["machine"]
    lines = [
        f"model {result['model']} ({result['backbone']}, {result['image_size']}px)  "
        f"images {result['images']} ({result['distinct_images']} distinct) from {result['data']}",
        f"machine: {m['cpu']}, {m['physical_cores']} physical cores; load average "
        f"{result['load_start']} at start, {result['load_end']} at end",
        "",
    ]
    header = f"{'':44}" + "".join(f"{name:>14}" for name in engines)
    lines.append(header)

    def row(label, get, fmt="{:.1f}"):
        cells = []
        for e in engines.values():
            try:
                v = get(e)
                cells.append(f"{fmt.format(v):>14}" if v is not None else f"{'-':>14}")
            except KeyError:
                cells.append(f"{'-':>14}")
        lines.append(f"{label:44}" + "".join(cells))

    row("Keras model.predict, arrays, batch 32 (img/s)", lambda e: e["keras_predict_arrays"]["images_per_s"])
    row("Classifier.predict, JPEG paths, b32 (img/s)", lambda e: e["predict_paths"]["images_per_s"])
    row("  engine alone on arrays (img/s)", lambda e: e["engine_on_arrays"]["images_per_s"])
    row("  decode + resize alone (img/s)", lambda e: e["decode_only"]["images_per_s"])
    row("1 image, Classifier.predict median (ms)", lambda e: e["latency_predict"]["median_ms"], "{:.2f}")
    row("1 image, Classifier.predict p95 (ms)", lambda e: e["latency_predict"]["p95_ms"], "{:.2f}")
    row("1 image, Keras model.predict median (ms)", lambda e: e["latency_keras_predict"]["median_ms"], "{:.2f}")
    row("1 image, Keras model.predict p95 (ms)", lambda e: e["latency_keras_predict"]["p95_ms"], "{:.2f}")
    row("peak RSS (MB)", lambda e: e["peak_rss_mb"], "{:.0f}")
    row("RSS after load + warm-up (MB)", lambda e: e["rss_after_load_mb"], "{:.0f}")
    row("load time (s)", lambda e: e["load_s"], "{:.2f}")
    row("load average before / after", lambda e: f"{e['load_before']}/{e['load_after']}", "{}")
    lines.append("")
    for name, r in result["ratios"].items():
        lines.append(
            f"{name} vs Keras: throughput x{r['throughput_vs_keras_predict']} (vs model.predict), "
            f"x{r['throughput_vs_keras_classifier']} (vs Keras Classifier.predict); latency "
            f"x{r['latency_vs_keras_predict']} (vs model.predict), x{r['latency_vs_keras_classifier']} "
            f"(vs Keras Classifier.predict); peak RSS x{r['peak_rss_vs_keras']}; "
            f"top-1 agreement {r['top1_agreement_with_keras']}")
    for target, ok in result["targets"].items():
        lines.append(f"target {target}: {'met' if ok else 'NOT met'}")
    return "\n".join(lines)


def _worker_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    out = measure_engine(spec["model"], spec["runtime"], spec["paths"],
                         repeats=spec["repeats"], passes=spec["passes"])
    Path(spec["out"]).write_text(json.dumps(out))


if __name__ == "__main__":
    _worker_main(sys.argv[1])
