"""Measure the app: time from `python app.py` to a serving page, and prediction latency.

Prints, as JSON, medians over ``--runs`` starts: the seconds from starting ``python app.py``
to the first answered ``GET /``, beside the seconds a bare ``python -c "import gradio"``
takes in the same run (a gauge of how busy the machine is; the app imports Gradio in about half
that time, without rewriting Gradio's type stubs: sports_classifier/app/gradio_import.py); then the first prediction after the page serves and the median of
``--predictions`` warm predictions, each a full round trip through gradio_client (upload,
queue, preprocessing, ONNX Runtime, answer); then as many Explain clicks (the heat map from the
ONNX model's class maps), and whether the app process ever mapped TensorFlow's libraries; with ``--compare N``, the median of N openings of
the Compare tab once the models are warm (its three steps: chart and table, curves and data,
mistakes view), each a round trip, and the slowest step.

    python scripts/measure_app.py --models models/lite0 --image examples/basketball/1.jpg
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers.app_server import start_app  # noqa: E402  (the one way tests and scripts start the app)


def time_import_gradio() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import gradio"], check=True)
    return time.perf_counter() - start


def measure_compare(client, model: str, runs: int, *, wait: float = 180) -> dict:
    """Seconds per Compare opening (its three API steps in a row), after the background work
    (charts, example predictions) is done: the mistakes view says so when it is. The client
    does not download the returned pictures (a browser fetches them lazily, in parallel)."""
    from gradio_client import Client

    client = Client(client.src, verbose=False, download_files=False)
    begin = time.perf_counter()
    while "example images wrong" not in str(client.predict(model, "All sports", api_name="/mistakes")[4]):
        if time.perf_counter() - begin > wait:
            raise SystemExit("the mistakes view was not ready in time")
        time.sleep(1)
    totals, steps = [], {"compare": [], "compare_details": [], "mistakes": []}
    for _ in range(runs):
        start_all = time.perf_counter()
        for step, args in (("compare", ()), ("compare_details", ()), ("mistakes", (model, "All sports"))):
            t = time.perf_counter()
            client.predict(*args, api_name=f"/{step}")
            steps[step].append(time.perf_counter() - t)
        totals.append(time.perf_counter() - start_all)
    return {"compare_open_median_s": round(statistics.median(totals), 3),
            "compare_chart_and_table_median_s": round(statistics.median(steps["compare"]), 3),
            "compare_steps_median_s": {k: round(statistics.median(v), 3) for k, v in steps.items()}}


def main(argv: list[str] | None = None) -> int:
    from gradio_client import Client, handle_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="as app.py --models (default: the app's own default)")
    parser.add_argument("--image", default=str(ROOT / "examples" / "basketball" / "1.jpg"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--predictions", type=int, default=10)
    parser.add_argument("--compare", type=int, default=0, help="time this many Compare openings (0: none)")
    parser.add_argument("--port", type=int, help="port to serve on (default: any free one)")
    args = parser.parse_args(argv)

    imports, serving = [], []
    for i in range(args.runs):
        imports.append(time_import_gradio())
        app = start_app(args.models, port=args.port, timeout=120)
        serving.append(app.seconds_to_serving)
        if i < args.runs - 1:
            app.stop()
    try:
        client = Client(app.url, verbose=False)
        image = handle_file(args.image)
        api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/predict"]
        models = api["parameters"][1]["parameter_default"]  # the models ticked by default
        begin = time.perf_counter()
        first = client.predict(image, models, api_name="/predict")
        first_s = time.perf_counter() - begin
        warm = []
        for _ in range(args.predictions):
            begin = time.perf_counter()
            client.predict(image, models, api_name="/predict")
            warm.append(time.perf_counter() - begin)
        explain = []
        for _ in range(args.predictions + 1):  # the first click is a warm-up
            begin = time.perf_counter()
            client.predict(image, models[0], api_name="/explain")
            explain.append(time.perf_counter() - begin)
        tensorflow_loaded = "tensorflow" in app.loaded_libraries()
        compare = measure_compare(client, models[0], args.compare) if args.compare else {}
    finally:
        app.stop()
    top = first[0].get("value", {}).get("label") if isinstance(first[0], dict) else None
    report = {
        "import_gradio_s": round(statistics.median(imports), 2),
        "time_to_serving_s": round(statistics.median(serving), 2),
        "time_to_serving_all_s": [round(s, 2) for s in serving],
        "serving_over_import_gradio": round(statistics.median(serving) / statistics.median(imports), 2),
        "models": models,
        "first_prediction_s": round(first_s, 3),
        "warm_prediction_median_s": round(statistics.median(warm), 3),
        "warm_prediction_max_s": round(max(warm), 3),
        "explain_first_ms": round(explain[0] * 1000),
        "explain_warm_median_ms": round(statistics.median(explain[1:]) * 1000),
        "explain_warm_max_ms": round(max(explain[1:]) * 1000),
        "tensorflow_loaded_by_the_app": tensorflow_loaded,
        "top_label": top,
        **compare,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
