"""A bounded load test of the Gradio app on 127.0.0.1: concurrent clients, real photos.

Starts ``python app.py --models MODEL --port <free port>`` (or uses a running app, ``--url``),
then ``--clients`` threads, each with its own ``gradio_client.Client``, send ``--requests``
predictions in all through ``/predict`` (upload + queue + decode + ONNX Runtime + answer), the
photos taken in turn from ``examples/`` (one per sport, real JPEGs). A warm-up round (every
client ``--warmup`` predictions) comes first and is not timed, so that the model is loaded and
the runtime's buffers are allocated before memory is compared.

Reports throughput, p50 / p95 / max latency, errors (must be zero), how many answers named the
photo's own sport, and the app process's resident memory (RSS) sampled every 50 ms: at start,
after warm-up, at the peak, at the end. Memory "stays flat" when the end is within
``--max-rss-growth-mb`` of the after-warm-up figure. Bounded: at most ``--max-seconds`` for the
whole measured phase; unfinished requests count as errors.

Exit status: 0 when there were no errors and memory stayed flat, 1 otherwise.

    python scripts/load_test.py --models runs/lite0                 # 8 clients, 200 predictions
    python scripts/load_test.py --models runs/lite0 --clients 4 --requests 40 --json
    python scripts/load_test.py --url http://127.0.0.1:7860/ --pid 12345
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers.app_server import AppStartError, start_app  # noqa: E402


# -- the app process: tests/helpers/app_server.py starts it (the one way tests and scripts do) --


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB (Linux /proc), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    """Samples a process's RSS every ``interval`` seconds until stopped."""

    def __init__(self, pid: int | None, interval: float = 0.05):
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self._stop_event = threading.Event()
        self._start = time.monotonic()

    def run(self) -> None:
        while self.pid is not None and not self._stop_event.is_set():
            value = rss_mb(self.pid)
            if value is not None:
                self.samples.append((time.monotonic() - self._start, value))
            self._stop_event.wait(self.interval)

    def now(self) -> float | None:
        return rss_mb(self.pid) if self.pid is not None else None

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    def peak(self) -> float | None:
        return max((v for _, v in self.samples), default=None)

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def at(self, t: float) -> float | None:
        """The sample nearest to ``t`` seconds after the sampler started."""
        return min(self.samples, key=lambda s: abs(s[0] - t))[1] if self.samples else None


# -- the clients ---------------------------------------------------------------------------------


def example_photos(folder: Path = EXAMPLES) -> list[tuple[Path, str]]:
    """(photo, its sport): the first JPEG of each sport folder, sports in sorted order."""
    photos = []
    for sport in sorted(p for p in folder.iterdir() if p.is_dir()):
        jpegs = sorted(sport.glob("*.jpg"), key=lambda p: (len(p.name), p.name))
        if jpegs:
            photos.append((jpegs[0], sport.name))
    if not photos:
        raise SystemExit(f"no example photos (examples/<sport>/*.jpg) under {folder}")
    return photos


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    right_sport: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def top_label(result) -> str | None:
    """The first model's top label in a /predict answer (one gr.Label update per model first)."""
    first = result[0] if isinstance(result, (list, tuple)) and result else None
    # a gr.Label update ({"value": {...}}) or, since the app returns plain values, the value itself
    value = first.get("value", first) if isinstance(first, dict) else None
    return value.get("label") if isinstance(value, dict) else None


def note(result, n_models: int) -> str:
    """The first model's note (the Markdown under its label: time taken, or the error)."""
    try:
        value = result[n_models]
        return str(value.get("value") if isinstance(value, dict) else value)
    except (IndexError, TypeError, AttributeError):
        return repr(result)[:200]


def predict_once(client, photo: Path, sport: str, models: list[str], outcome: Outcome, deadline: float) -> None:
    """One prediction through ``client``, its latency or its error counted in ``outcome``."""
    from gradio_client import handle_file

    start = time.perf_counter()
    try:
        job = client.submit(handle_file(str(photo)), models, api_name="/predict")
        result = job.result(timeout=max(0.1, deadline - time.monotonic()))
    except Exception as exc:  # every failure is counted and reported, none ends the run
        with outcome.lock:
            outcome.errors.append(f"{photo.parent.name}/{photo.name}: {type(exc).__name__}: {exc}"[:300])
        return
    label = top_label(result)
    with outcome.lock:
        if label is None:  # answered, but without a prediction (e.g. the model failed to load)
            outcome.errors.append(f"{photo.parent.name}/{photo.name}: no prediction in the answer: "
                                  f"{note(result, len(models))}"[:300])
        else:
            outcome.latencies.append(time.perf_counter() - start)
            outcome.right_sport += label == sport


def run_load(url: str, *, clients: int, requests: int, warmup: int, max_seconds: float,
             photos: list[tuple[Path, str]], models: list[str] | None, pid: int | None,
             duration: float | None = None) -> dict:
    from gradio_client import Client, handle_file

    sampler = RssSampler(pid)
    rss_start = sampler.now()
    sampler.start()

    with ThreadPoolExecutor(clients) as pool:
        connections = list(pool.map(lambda _: Client(url, verbose=False), range(clients)))
    if models is None:  # the models the app ticks by default
        info = connections[0].view_api(return_format="dict", print_info=False)
        models = info["named_endpoints"]["/predict"]["parameters"][1]["parameter_default"]

    def one(client, k: int, outcome: Outcome, deadline: float) -> None:
        predict_once(client, *photos[k % len(photos)], models, outcome, deadline)

    # Warm-up: every client at once, as in the measured phase (loads the model, sizes buffers).
    warm = Outcome()
    warm_deadline = time.monotonic() + max(60.0, max_seconds)
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda i: [one(connections[i], i * warmup + j, warm, warm_deadline) for j in range(warmup)],
                      range(clients)))
    rss_warm = sampler.now()

    # Measured phase: ``requests`` predictions handed out in turn to whichever client is free;
    # with ``duration``, as many as the clients send in that time (each one sent finishes, within
    # ``max_seconds`` more).
    outcome = Outcome()
    counter = iter(range(requests) if duration is None else itertools.count())
    counter_lock = threading.Lock()
    issuing = time.monotonic() + (max_seconds if duration is None else duration)
    deadline = issuing if duration is None else issuing + max_seconds
    sent = [0]

    def worker(client) -> None:
        while time.monotonic() < issuing:
            with counter_lock:
                k = next(counter, None)
                sent[0] += k is not None
            if k is None:
                return
            one(client, k, outcome, deadline)

    begin = time.perf_counter()
    phase_start = sampler.elapsed()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, connections))
    wall = time.perf_counter() - begin
    rss_end = sampler.now()
    phase_end = sampler.elapsed()
    sampler.stop()
    # RSS at each quarter of the measured phase: a leak shows as a steady climb
    quarters = [sampler.at(phase_start + q * (phase_end - phase_start)) for q in (0.25, 0.5, 0.75)]
    _close_all(connections)

    done = len(outcome.latencies)
    if duration is not None:
        requests = sent[0]
    unfinished = requests - done - len(outcome.errors)
    errors = outcome.errors + [f"{unfinished} request(s) not finished within {max_seconds:.0f} s"] * (unfinished > 0)
    return {
        "url": url, "models": models, "clients": clients, "requests": requests, "warmup_per_client": warmup,
        "completed": done, "errors": len(outcome.errors) + max(0, unfinished), "error_messages": errors[:10],
        "warmup_errors": len(warm.errors), "warmup_error_messages": warm.errors[:5],
        "wall_seconds": round(wall, 2), "throughput_per_s": round(done / wall, 2) if wall > 0 else None,
        "latency_ms": _latency_ms(outcome.latencies),
        "right_sport": outcome.right_sport,
        "rss_mb": {"start": _r(rss_start), "after_warmup": _r(rss_warm), "peak": _r(sampler.peak()),
                   "end": _r(rss_end), "quarters": [_r(q) for q in quarters],
                   "growth_after_warmup": _r(rss_end - rss_warm if rss_end is not None and rss_warm is not None
                                             else None),
                   "samples": len(sampler.samples)},
    }


def _close_all(connections) -> None:
    for c in connections:
        try:
            c.close()
        except Exception:  # closing is best effort; the app keeps running either way
            pass


def _latency_ms(latencies: list[float]) -> dict:
    """p50, p95, max and mean of the latencies (seconds) in milliseconds; None when there are none."""
    lat = sorted(latencies)

    def pct(q: float) -> float | None:
        return lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))] * 1000 if lat else None

    return {"p50": _r(pct(0.50)), "p95": _r(pct(0.95)), "max": _r(lat[-1] * 1000 if lat else None),
            "mean": _r(statistics.fmean(lat) * 1000 if lat else None)}


def _r(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def table(report: dict) -> str:
    lat, rss = report["latency_ms"], report["rss_mb"]
    rows = [
        ("clients x requests", f"{report['clients']} clients, {report['requests']} predictions "
                               f"(+{report['warmup_per_client']} warm-up each)"),
        ("models", ", ".join(report["models"])),
        ("completed", f"{report['completed']} in {report['wall_seconds']} s"),
        ("throughput", f"{report['throughput_per_s']} predictions/s"),
        ("latency p50 / p95 / max", f"{lat['p50']} / {lat['p95']} / {lat['max']} ms"),
        ("errors", f"{report['errors']} (warm-up: {report['warmup_errors']})"),
        ("top label = photo's sport", f"{report['right_sport']} of {report['completed']}"),
        ("app RSS start / after warm-up", f"{rss['start']} / {rss['after_warmup']} MiB"),
        ("app RSS at 1/4, 1/2, 3/4", " / ".join(str(q) for q in rss["quarters"]) + " MiB"),
        ("app RSS peak / end", f"{rss['peak']} / {rss['end']} MiB ({rss['samples']} samples)"),
        ("RSS growth after warm-up", f"{rss['growth_after_warmup']} MiB"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines += [f"  error: {m}" for m in report["error_messages"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--models", help="bundle folder(s) for app.py --models (default: models/DEFAULT, "
                       "else runs/lite0)")
    where.add_argument("--url", help="test an app that is already running here instead of starting one")
    parser.add_argument("--pid", type=int, help="with --url: the app's process id, to sample its memory")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="measured predictions in all")
    parser.add_argument("--warmup", type=int, default=2, help="untimed predictions per client first")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="time bound of the measured phase")
    parser.add_argument("--duration", type=float, help="instead of --requests: every client sends predictions "
                        "for this many seconds (each one sent must then finish within --max-seconds)")
    parser.add_argument("--max-rss-growth-mb", type=float, default=50.0,
                        help="fail when RSS at the end exceeds RSS after warm-up by more than this")
    parser.add_argument("--examples", type=Path, default=EXAMPLES, help="folder of <sport>/<photo>.jpg")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--log", type=Path, help="where the started app's output goes (default: a temp file)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.requests < 1 or args.warmup < 0:
        parser.error("--clients and --requests must be >= 1, --warmup >= 0")

    photos = example_photos(args.examples)
    app = None
    if args.url:
        url, pid = args.url, args.pid
    else:
        models = args.models or _default_models()
        log = args.log or Path(os.environ.get("TMPDIR", "/tmp")) / f"load_test_app_{os.getpid()}.log"
        try:
            app = start_app(models, log, timeout=120)
        except AppStartError as exc:
            raise SystemExit(str(exc)) from None
        url, pid = app.url, app.pid
    try:
        report = run_load(url, clients=args.clients, requests=args.requests, warmup=args.warmup,
                          max_seconds=args.max_seconds, photos=photos, models=None, pid=pid,
                          duration=args.duration)
        if app is not None and app.proc.poll() is not None:
            report["errors"] += 1
            report["error_messages"].append(f"app.py exited with {app.proc.returncode} during the test")
    finally:
        if app is not None:
            app.stop()
    growth = report["rss_mb"]["growth_after_warmup"]
    report["rss_flat"] = growth is None or growth <= args.max_rss_growth_mb
    report["max_rss_growth_mb"] = args.max_rss_growth_mb
    print(json.dumps(report) if args.json else table(report))
    return 0 if report["errors"] == 0 and report["rss_flat"] else 1


def _default_models() -> str:
    marker = ROOT / "models" / "DEFAULT"
    if marker.is_file():
        return str(ROOT / "models" / marker.read_text().strip())
    if (ROOT / "runs" / "lite0" / "config.json").is_file():
        return str(ROOT / "runs" / "lite0")
    raise SystemExit("no model: pass --models BUNDLE (e.g. runs/lite0) or --url")


if __name__ == "__main__":
    sys.exit(main())
