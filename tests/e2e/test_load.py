"""The bounded load test (scripts/load_test.py), small, on the tiny bundle: CI runs the same code
path as the full measurement (8 clients x 200 predictions on the real model, docs/reliability.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers.app_server import ROOT

pytest.importorskip("gradio_client")
SCRIPT = ROOT / "scripts" / "load_test.py"


def test_small_load_test_has_no_errors_and_flat_memory(tiny_bundle, tmp_path):
    clients, requests = 4, 40
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--models", str(tiny_bundle), "--clients", str(clients),
         "--requests", str(requests), "--warmup", "2", "--max-seconds", "60", "--max-rss-growth-mb", "40",
         "--log", str(tmp_path / "app.log"), "--json"],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )
    assert result.stdout.strip(), result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"\nload test (tiny bundle): {report['throughput_per_s']} predictions/s, "
          f"p50 {report['latency_ms']['p50']} ms, p95 {report['latency_ms']['p95']} ms, RSS after warm-up "
          f"{report['rss_mb']['after_warmup']} MiB -> end {report['rss_mb']['end']} MiB")
    assert report["errors"] == 0 and report["warmup_errors"] == 0, report["error_messages"]
    assert report["completed"] == requests and report["clients"] == clients
    assert report["models"] == ["tiny"]
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p95"] <= report["latency_ms"]["max"]
    rss = report["rss_mb"]
    assert rss["samples"] > 10 and rss["after_warmup"] <= rss["peak"]
    assert report["rss_flat"] and rss["growth_after_warmup"] <= 40
    assert result.returncode == 0, result.stderr[-3000:]


def test_load_test_fails_when_requests_fail(tmp_path):
    """The script's verdict can go the other way: a model that cannot load answers every
    prediction with an error, which must count and give exit status 1."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--models", str(tmp_path / "missing-bundle"), "--clients", "2",
         "--requests", "4", "--warmup", "0", "--max-seconds", "60", "--log", str(tmp_path / "app.log"), "--json"],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 1 and report["completed"] + report["errors"] == 4
