"""The one way tests and scripts start the app: ``python app.py`` on 127.0.0.1, waited for until
its page answers (``start_app``), stopped by ``AppProcess.stop`` or by leaving its ``with`` block.
Also finds a real model for the tests that want one.

Used by tests/e2e (app, browser, reliability, security) and by scripts/load_test.py,
scripts/measure_app.py and scripts/measure_upload_memory.py.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class AppStartError(RuntimeError):
    """app.py exited, or did not serve in time (the message ends with its log)."""


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
    """A free port: any the system gives, or a free one of $SPORTS_CLASSIFIER_TEST_PORTS
    (``8000-8049``) when a shared machine gives each user a range. The range is tried in random
    order: test processes running side by side (``pytest -n``) would otherwise all pick its first
    port, each before the other's server has bound it."""
    span = os.environ.get("SPORTS_CLASSIFIER_TEST_PORTS")
    candidates = [0]
    if span:
        low, _, high = span.partition("-")
        ports = range(int(low), int(high or low) + 1)
        candidates = random.sample(ports, len(ports))
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
    log: Path | None

    @property
    def pid(self) -> int:
        return self.proc.pid

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

    def __enter__(self) -> "AppProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_app(models: str | None = None, log: Path | None = None, *, timeout: float = 60.0,
              port: int | None = None, env: dict[str, str] | None = None) -> AppProcess:
    """Run ``python app.py [--models MODELS] --port PORT`` (a free port by default) and wait until
    its page answers; ``seconds_to_serving`` is the time from starting the process to the first
    successful GET /. Output goes to ``log`` (discarded when None). ``env`` adds variables
    (``GRADIO_TEMP_DIR``, ...). Raises ``AppStartError`` if it exits or does not serve within
    ``timeout`` seconds (it is killed then)."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/"
    # loopback is rate-limited like any client (issue 23): off unless a test sets it
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1",
               **{"SPORTS_CLASSIFIER_RATE_LIMIT": "0", **(env or {})})
    command = [sys.executable, str(ROOT / "app.py"), *(["--models", models] if models else []), "--port", str(port)]
    start = time.perf_counter()
    out = open(log, "w") if log is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    finally:
        if log is not None:
            out.close()
    wait_for_page(url, proc, log, timeout=timeout, since=start)
    return AppProcess(proc, url, time.perf_counter() - start, log)


def wait_for_page(url: str, proc: subprocess.Popen, log: Path | None, *, timeout: float,
                  since: float | None = None) -> None:
    """Poll ``url`` every 20 ms until it answers 200. ``AppStartError`` with the log's tail if
    the process exits first, or if ``timeout`` seconds pass from ``since`` (perf_counter; default
    now), after which the process is killed."""
    since = time.perf_counter() if since is None else since
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            raise AppStartError(f"app.py exited with {proc.returncode}:\n{_tail(log)}")
        if time.perf_counter() - since > timeout:
            proc.kill()
            proc.wait(5)
            raise AppStartError(f"app.py did not serve within {timeout:.0f} s:\n{_tail(log)}")
        time.sleep(0.02)


def _tail(log: Path | None) -> str:
    return log.read_text()[-3000:] if log is not None else "(no log kept)"


def http(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 60):
    """(status, body) of one request as a script would send it: an HTTP error is an answer too."""
    import urllib.error

    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
