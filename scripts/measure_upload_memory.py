"""Memory of the app around 64-megapixel uploads: RSS and peak RSS (VmHWM) of ``python app.py``
after a warm-up prediction, then after predicting each of three 64 Mpx PNGs (8-bit RGB, RGBA,
16-bit grey; a few hundred KB each, so under the 10 MB upload limit).

    python scripts/measure_upload_memory.py --models models/lite0 --port 7860

Raw HTTP (upload, then /gradio_api/call/predict), one request at a time; prints a table, or
JSON with --json.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers.app_server import start_app  # noqa: E402  (the one way tests and scripts start the app)
IMAGES = [("64 Mpx 8-bit RGB PNG", "RGB", (10, 200, 30)), ("64 Mpx RGBA PNG", "RGBA", (10, 200, 30, 128)),
          ("64 Mpx 16-bit PNG", "I;16", 300)]


def memory(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", status).group(1)) // 1024 for k in ("VmRSS", "VmHWM")}


def http(url: str, data: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def upload(base: str, content: bytes) -> str:
    b = "b0undary"
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"photo.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + content + f"\r\n--{b}--\r\n".encode()
    status, out = http(base + "gradio_api/upload", body, {"Content-Type": f"multipart/form-data; boundary={b}"})
    if status != 200:
        raise RuntimeError(f"upload: HTTP {status}")
    return json.loads(out)[0]


def predict(base: str, path: str, model: str) -> str:
    _, body = http(base + "gradio_api/call/predict", json.dumps({"data": [{"path": path}, [model]]}).encode(),
                   {"Content-Type": "application/json"})
    _, body = http(f"{base}gradio_api/call/predict/{json.loads(body)['event_id']}")
    text = body.decode("utf-8", "replace")
    return "predicted" if "event: complete" in text else "error: " + text.rsplit("data:", 1)[-1].strip()[:120]


def png(mode: str, value) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (8000, 8000), value).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, help="one bundle folder")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    model = Path(args.models).name
    base = f"http://127.0.0.1:{args.port}/"
    with tempfile.TemporaryDirectory() as tmp:
        app = start_app(args.models, port=args.port, env={"GRADIO_TEMP_DIR": tmp}, timeout=60)
        proc = app.proc
        rows = []
        try:
            outcome = predict(base, upload(base, _small()), model)
            time.sleep(1)
            rows.append(("warm-up prediction (64x64 photo)", outcome, 0.0, memory(proc.pid)))
            for label, mode, value in IMAGES:
                content = png(mode, value)
                path = upload(base, content)
                start = time.perf_counter()
                outcome = predict(base, path, model)
                seconds = time.perf_counter() - start
                time.sleep(1)
                rows.append((f"{label} ({len(content) // 1024} KB)", outcome, seconds, memory(proc.pid)))
        finally:
            app.stop()
    if args.json:
        print(json.dumps([{"what": w, "outcome": o, "seconds": round(s, 2), **m} for w, o, s, m in rows]))
    else:
        for what, outcome, seconds, mem in rows:
            print(f"{what:45s} {outcome[:60]:60s} {seconds:5.1f} s  RSS {mem['VmRSS']:5d} MB  peak {mem['VmHWM']:5d} MB")
    return 0


def _small() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


if __name__ == "__main__":
    sys.exit(main())
