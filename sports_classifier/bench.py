"""Keras vs ONNX Runtime, side by side on real images (``sports-classifier bench``).

One run measures, for each engine, on the same JPEG files:

* batch throughput at batch 32 (images/s): Keras ``model.predict`` on already decoded arrays
  (the baseline), and ``Classifier.predict`` on the list of JPEG paths, decoding included;
  also the engine alone on decoded arrays and decoding alone, to show where the time goes;
* the CPU time the process spends per image (all its threads), which moves far less than
  wall-clock time when other jobs share the machine;
* single-image latency end to end (decode + preprocess + model), median and p95;
* peak memory: the peak RSS of the engine's process.

How it stays fair: each engine lives in its own Python process (so its peak RSS is its own,
and the ONNX processes never import TensorFlow), all started before timing begins, each
warmed up. The measurements are then interleaved: pass 1 of Keras, pass 1 of ONNX, pass 1 of
int8, pass 2 of Keras, ... so a change in the machine's load during the run hits every engine
alike. Throughput is the median pass; the 1-minute load average is recorded at start and end.

(Over 400 lines because the worker process, its protocol and the report belong together;
``speed_accuracy`` reuses the workers to compare several models.)
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

from .errors import DatasetLayoutError, UserInputError

BATCH = 32
JPEG_SUFFIXES = (".jpg", ".jpeg")  # what is timed is JPEG decoding + the network
TARGETS = {"speedup_vs_keras_predict": 4.0, "images_per_s": 120.0, "latency_median_ms": 15.0}
_REPLY = "@@bench "  # marks the worker's answers among anything else printed on its stdout

# name -> (what it times, engines it applies to: None = all)
THROUGHPUT = {
    "keras_predict_arrays": "Keras model.predict on decoded arrays, batch 32",
    "predict_paths": "Classifier.predict on the list of JPEG paths, batch 32",
    "engine_on_arrays": "the engine alone on decoded arrays",
    "decode_only": "decode + resize alone (preprocess_batch)",
}
LATENCY = {
    "latency_predict": "Classifier.predict on one JPEG path",
    "latency_keras_predict": "decode + preprocess + Keras model.predict on one image",
}
KERAS_ONLY = {"keras_predict_arrays", "latency_keras_predict"}


def find_images(data: str | Path) -> list[str]:
    """JPEG files under ``data`` (recursively), in a fixed order."""
    root = Path(data)
    if not root.is_dir():
        raise DatasetLayoutError(f"{data} is not a folder of images")
    paths = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in JPEG_SUFFIXES and p.is_file())
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
    """The machine a benchmark ran on: ``hardware.measured_on`` plus Python and the platform."""
    from .hardware import measured_on

    return measured_on() | {"python": platform.python_version(), "platform": platform.platform()}


def load_average() -> float:
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


# -- the worker: one engine, in its own process ---------------------------------------------------


class _Worker:
    """Holds one engine and times one thing at a time, on request."""

    def __init__(self, model: str, runtime: str, paths: list[str]):
        from .classifier import Classifier
        from .images import preprocess, preprocess_batch

        t0 = time.perf_counter()
        self.clf = Classifier.from_pretrained(model, runtime=runtime)
        self.load_s = round(time.perf_counter() - t0, 2)
        self.paths = paths
        self.size = self.clf.config.image_size
        self._preprocess, self._preprocess_batch = preprocess, preprocess_batch
        self.next_single = 0
        self.top1: list[str] = []
        # Warm-up: every path that is timed later runs once first.
        self.clf.predict(paths[: min(BATCH, len(paths))])
        for p in paths[:3]:
            self.clf.predict(p)
        self.pixels = preprocess_batch(paths, self.size)
        self.clf.run_network(self.pixels[: min(BATCH, len(paths))])
        self.rss_after_load_mb = _rss_mb()
        self.net = None
        if self.clf.runtime == "keras":
            self.net = self.clf.keras_model
            self.net.predict(self.pixels[: min(BATCH, len(paths))], batch_size=BATCH, verbose=0)
            self.net.predict(self.pixels[:1], verbose=0)

    def throughput(self, what: str) -> dict:
        fn = {
            "predict_paths": self._predict_paths,
            "engine_on_arrays": lambda: self.clf.run_network(self.pixels),
            "decode_only": lambda: self._preprocess_batch(self.paths, self.size),
            "keras_predict_arrays": lambda: self.net.predict(self.pixels, batch_size=BATCH, verbose=0),
        }[what]
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}

    def _predict_paths(self) -> None:
        self.top1 = [pairs[0][0] for pairs in self.clf.predict(self.paths)]

    def latency(self, what: str, count: int) -> list[float]:
        if what == "latency_predict":
            fn = self.clf.predict
        else:
            fn = lambda p: self.net.predict(self._preprocess(p, self.size)[None], verbose=0)  # noqa: E731
        times = []
        for _ in range(count):
            p = self.paths[self.next_single % len(self.paths)]
            self.next_single += 1
            t0 = time.perf_counter()
            fn(p)
            times.append(time.perf_counter() - t0)
        return times

    def summary(self) -> dict:
        versions = {"numpy": np.__version__}
        if self.net is not None:
            import keras
            import tensorflow as tf

            versions |= {"tensorflow": tf.__version__, "keras": keras.__version__}
        else:
            import onnxruntime as ort

            versions |= {"onnxruntime": ort.__version__}
        return {"engine": self.clf.runtime, "serving": self.clf.serving_note, "load_s": self.load_s, "rss_after_load_mb": self.rss_after_load_mb,
                "peak_rss_mb": _peak_rss_mb(), "top1": self.top1, "versions": versions,
                "threads": self.clf.threads,
                "tensorflow_imported": "tensorflow" in sys.modules}


def _serve() -> None:
    """Worker loop: one JSON request per stdin line, one marked JSON answer per stdout line."""
    worker = None
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["cmd"] == "start":
                worker = _Worker(req["model"], req["runtime"], req["paths"])
                answer = {"ok": True}
            elif req["cmd"] == "throughput":
                answer = worker.throughput(req["what"])
            elif req["cmd"] == "latency":
                answer = {"times": worker.latency(req["what"], req["count"])}
            else:
                answer = worker.summary()
        except Exception as exc:  # reported to the parent, which stops the run
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(_REPLY + json.dumps(answer), flush=True)
        if req["cmd"] == "summary" or "error" in answer:
            return


class ServingProcess:
    """The parent's handle on one worker process."""

    def __init__(self, runtime: str):
        self.runtime = runtime
        self.stderr = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.proc = subprocess.Popen([sys.executable, "-m", "sports_classifier.bench", "--serve"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, env=env)

    def ask(self, **req):
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(_REPLY):
                answer = json.loads(line[len(_REPLY):])
                if "error" in answer:
                    raise RuntimeError(f"benchmark of runtime {self.runtime!r} failed: {answer['error']}")
                return answer
        self.stderr.seek(0)
        tail = " | ".join(self.stderr.read().strip().splitlines()[-5:])
        raise RuntimeError(f"benchmark of runtime {self.runtime!r} stopped: {tail}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()


# -- the run -----------------------------------------------------------------------------------------


def run_benchmark(model, data, *, images: int = 256, repeats: int = 50, as_json: bool = False,
                  passes: int = 5, runtimes: tuple[str, ...] | None = None, progress: bool = False) -> dict:
    """Benchmark Keras against ONNX Runtime (and the int8 model when the bundle has one, and
    ``auto``, the model as served, when it has both) on
    ``images`` JPEG files found under ``data``: ``passes`` timed passes of each batch
    measurement and ``repeats`` single images per engine, interleaved between engines.
    Prints a table (or JSON) and returns the dict. ``progress``: a bar on stderr (each engine
    loaded and warmed up, then each pass), so the table on stdout stays clean."""
    from tqdm.auto import tqdm

    from . import bundle

    if images < 1 or repeats < 1 or passes < 1:
        raise UserInputError(f"--images, --repeats and --passes must be at least 1, got {images}, {repeats}, {passes}")
    config = bundle.read_config(model)
    paths = _pick(find_images(data), images)
    if runtimes is None:
        runtimes = tuple(bundle.served_runtimes(model, config))
        if {"onnx", "onnx-int8"} <= set(runtimes):  # as served: int8, close calls re-run in float
            runtimes += ("auto",)
    result = {
        "model": str(model), "backbone": config.architecture, "image_size": config.image_size,
        "data": str(data), "images": len(paths), "distinct_images": len(set(paths)),
        "batch_size": BATCH, "repeats": repeats, "passes": passes, "machine": machine(),
        "load_start": load_average(), "engines": {},
    }
    workers = {}
    bar = tqdm(total=len(runtimes) + passes, desc="bench", unit="step", disable=not progress, file=sys.stderr)
    try:
        for rt in runtimes:  # all loaded and warmed up before any timing starts
            bar.set_postfix_str(f"loading {rt}")
            workers[rt] = ServingProcess(rt)
            workers[rt].ask(cmd="start", model=str(model), runtime=rt, paths=paths)
            bar.update()
        raw = {rt: {} for rt in runtimes}
        for p in range(passes):
            bar.set_postfix_str(f"pass {p + 1}/{passes}")
            for what in THROUGHPUT:
                for rt, w in workers.items():
                    if what in KERAS_ONLY and rt != "keras":
                        continue
                    raw[rt].setdefault(what, []).append(w.ask(cmd="throughput", what=what))
            count = repeats // passes + (1 if p < repeats % passes else 0)
            for what in LATENCY:
                for rt, w in workers.items():
                    if (what in KERAS_ONLY and rt != "keras") or not count:
                        continue
                    raw[rt].setdefault(what, []).extend(w.ask(cmd="latency", what=what, count=count)["times"])
            bar.update()
        bar.close()
        for rt, w in workers.items():
            e = w.ask(cmd="summary")
            for what, runs in raw[rt].items():
                e[what] = throughput_summary(runs, len(paths)) if what in THROUGHPUT else latency_summary(runs)
            result["engines"][rt] = e
    finally:
        bar.close()
        for w in workers.values():
            w.close()
    result["load_end"] = load_average()
    result["ratios"] = _ratios(result["engines"])
    result["targets"] = _targets(result)
    print(json.dumps(result, indent=2) if as_json else format_table(result))
    return result


def throughput_summary(runs: list[dict], n: int) -> dict:
    walls = [r["wall"] for r in runs]
    cpus = [r["cpu"] for r in runs]
    return {"images_per_s": round(n / float(np.median(walls)), 1),
            "cpu_ms_per_image": round(float(np.median(cpus)) / n * 1e3, 2),
            "passes_s": [round(t, 3) for t in walls]}


def latency_summary(times: list[float]) -> dict:
    ms = np.asarray(times) * 1e3
    return {"median_ms": round(float(np.median(ms)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "min_ms": round(float(ms.min()), 2), "n": len(times)}


def _ratio(a, b) -> float | None:
    return round(a / b, 2) if a and b else None


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
            "cpu_per_image_vs_keras_predict": _ratio(keras["keras_predict_arrays"]["cpu_ms_per_image"],
                                                     e["predict_paths"]["cpu_ms_per_image"]),
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
    from .hardware import describe

    engines = result["engines"]
    m = result["machine"]
    lines = [
        f"model {result['model']} ({result['backbone']}, {result['image_size']}px)  "
        f"images {result['images']} ({result['distinct_images']} distinct) from {result['data']}",
        f"machine: {describe(m)}, {m['physical_cores']} physical cores; 1-min load average "
        f"{result['load_start']} at start, {result['load_end']} at end; "
        f"{result['passes']} interleaved passes, {result['repeats']} single images per engine",
        "",
        f"{'':46}" + "".join(f"{name:>12}" for name in engines),
    ]

    def row(label, get, fmt="{:.1f}"):
        cells = []
        for e in engines.values():
            try:
                v = get(e)
            except KeyError:
                v = None
            cells.append(f"{fmt.format(v) if v is not None else '-':>12}")
        lines.append(f"{label:46}" + "".join(cells))

    row("Keras model.predict, arrays, b32 (img/s)", lambda e: e["keras_predict_arrays"]["images_per_s"])
    row("Classifier.predict, JPEG paths, b32 (img/s)", lambda e: e["predict_paths"]["images_per_s"])
    row("  engine alone, arrays (img/s)", lambda e: e["engine_on_arrays"]["images_per_s"])
    row("  decode + resize alone (img/s)", lambda e: e["decode_only"]["images_per_s"])
    row("Keras model.predict, CPU ms per image", lambda e: e["keras_predict_arrays"]["cpu_ms_per_image"], "{:.2f}")
    row("Classifier.predict, CPU ms per image", lambda e: e["predict_paths"]["cpu_ms_per_image"], "{:.2f}")
    row("  engine alone, CPU ms per image", lambda e: e["engine_on_arrays"]["cpu_ms_per_image"], "{:.2f}")
    row("  decode + resize, CPU ms per image", lambda e: e["decode_only"]["cpu_ms_per_image"], "{:.2f}")
    row("1 image, Classifier.predict, median (ms)", lambda e: e["latency_predict"]["median_ms"], "{:.2f}")
    row("1 image, Classifier.predict, p95 (ms)", lambda e: e["latency_predict"]["p95_ms"], "{:.2f}")
    row("1 image, Keras model.predict, median (ms)", lambda e: e["latency_keras_predict"]["median_ms"], "{:.2f}")
    row("1 image, Keras model.predict, p95 (ms)", lambda e: e["latency_keras_predict"]["p95_ms"], "{:.2f}")
    row("peak RSS (MB)", lambda e: e["peak_rss_mb"], "{:.0f}")
    row("RSS after load + warm-up (MB)", lambda e: e["rss_after_load_mb"], "{:.0f}")
    row("load time (s)", lambda e: e["load_s"], "{:.2f}")
    lines.append("")
    for name, r in result["ratios"].items():
        lines.append(
            f"{name} vs Keras: throughput x{r['throughput_vs_keras_predict']} vs model.predict, "
            f"x{r['throughput_vs_keras_classifier']} vs Keras Classifier.predict; CPU per image "
            f"x{r['cpu_per_image_vs_keras_predict']} less than model.predict; latency "
            f"x{r['latency_vs_keras_predict']} vs model.predict, x{r['latency_vs_keras_classifier']} vs Keras "
            f"Classifier.predict; peak RSS x{r['peak_rss_vs_keras']}; top-1 agreement "
            f"{r['top1_agreement_with_keras']}")
    for target, ok in result["targets"].items():
        lines.append(f"target {target}: {'met' if ok else 'NOT met'}")
    return "\n".join(lines)


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()
