"""Start ``python app.py`` on 127.0.0.1 for the app and browser tests, and find a real model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def real_bundle() -> Path | None:
    """A trained 100-class model: the bundled default in models/, else the lead's runs/lite0."""
    from sports_classifier import bundle
    from sports_classifier.hub import bundled_models

    found = bundled_models(ROOT / "models")
    if found:
        return Path(found[0].location)
    run = ROOT / "runs" / "lite0"
    return run if (run / bundle.CONFIG).is_file() else None


def free_port() -> int:
    """A free port: any, or the first free one in $SPORTS_CLASSIFIER_TEST_PORTS (``8000-8049``)
    when a shared machine gives each user a range."""
    span = os.environ.get("SPORTS_CLASSIFIER_TEST_PORTS")
    candidates = [0]
    if span:
        low, _, high = span.partition("-")
        candidates = list(range(int(low), int(high or low) + 1))
    for port in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError(f"no free port in {span}")


@dataclass
class AppProcess:
    proc: subprocess.Popen
    url: str
    seconds_to_serving: float
    log: Path

    def loaded_libraries(self) -> str:
        return Path(f"/proc/{self.proc.pid}/maps").read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_app(models: str, log: Path, *, timeout: float = 60.0, port: int | None = None,
              env: dict[str, str] | None = None) -> AppProcess:
    """Run ``python app.py --models MODELS`` and wait until its page answers; the time from
    starting the process to the first successful GET / is ``seconds_to_serving``."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/"
    # loopback is rate-limited like any client (issue 23): off unless a test sets it
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1",
               **{"SPORTS_CLASSIFIER_RATE_LIMIT": "0", **(env or {})})
    start = time.perf_counter()
    out = open(log, "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--models", models, "--port", str(port)],
                            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    out.close()
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.perf_counter() - start > timeout:
            proc.kill()
            raise RuntimeError(f"app.py did not serve within {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return AppProcess(proc, url, time.perf_counter() - start, log)
