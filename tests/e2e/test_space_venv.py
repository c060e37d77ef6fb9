"""The built Space folder, run exactly as a Hugging Face Space runs it (issue 26).

``sports-classifier space --models alice/sports-lite0 --out DIR`` against the loopback Hub
(tests/helpers/hub_server.py, holding the bundled ``models/lite0``); then, as the Space's
builder does: a fresh virtual environment with only the folder's ``requirements.txt`` plus
``gradio==<sdk_version>`` (from the package index: nothing of this checkout's environment),
and ``python app.py`` inside DIR with a Space's environment (``SYSTEM=spaces``, ``SPACE_ID``,
``HF_ENDPOINT``) and no ``SPORTS_CLASSIFIER_MODELS``. The app must serve the model the folder
was built with, pulled from the Hub, and answer a prediction through ``gradio_client``; and
behind the Space's proxy the rate limit counts each forwarded client on its own.

Slow (a pip install of Gradio and ONNX Runtime: about a minute with wheels at hand, more on a
cold cache): ``-m slow`` selects it, ``-m "not slow"`` leaves it out; CI runs it. The install,
start and first-prediction times are printed (``-s``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.app_server import free_port, real_bundle, wait_for_page
from helpers.hub_server import FakeHub, use_hub
from sports_classifier.app.uploads import COSTS

ROOT = Path(__file__).resolve().parents[2]
REPO = "alice/sports-lite0"
# Each prediction through gradio_client uploads its photo first: both count (uploads.COSTS).
PER_PREDICT = COSTS["upload"] + COSTS["predict"]
LIMIT = 3 * PER_PREDICT  # cost units per client per minute in the Space (SPORTS_CLASSIFIER_RATE_LIMIT)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle_dir() -> Path:
    found = real_bundle()
    if found is None:
        pytest.skip("no bundled model in models/")
    return ROOT / "models" / "lite0" if (ROOT / "models" / "lite0").is_dir() else found


def test_the_built_space_serves_its_models_in_a_fresh_venv(bundle_dir, tmp_path, monkeypatch):
    import gradio_client
    from huggingface_hub import SpaceCard

    from sports_classifier import cli
    from sports_classifier.hub import MODELS_ENV

    hub = FakeHub()
    hub.add_commit(REPO, bundle_dir, tags=["v1"])
    with hub:
        use_hub(monkeypatch, hub.url, tmp_path / "builder-home")
        space = tmp_path / "space"
        monkeypatch.chdir(ROOT)  # the default --include: examples/
        assert cli.main(["space", "--models", REPO, "--out", str(space)]) == 0
        sdk_version = SpaceCard.load(space / "README.md").data.sdk_version

        # Nothing of this process's environment: no PYTHONPATH to the checkout, no Hub settings.
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("HF_", "HUGGING", "SPORTS_CLASSIFIER", "GRADIO_", "PYTHON", "VIRTUAL_ENV"))}

        # The Space's build: a fresh venv, its requirements.txt and the Gradio of sdk_version.
        venv = tmp_path / "venv"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, env=clean)
        python = venv / "bin" / "python"
        install = subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(space / "requirements.txt"),
                                  f"gradio=={sdk_version}"], capture_output=True, text=True, timeout=1500, env=clean)
        install_s = time.perf_counter() - start
        assert install.returncode == 0, install.stderr[-3000:]
        # Nothing of the training stack, and the package only as the folder's own copy.
        listed = subprocess.run([str(python), "-m", "pip", "list"], capture_output=True, text=True, check=True,
                                env=clean).stdout.lower()
        assert "tensorflow" not in listed and "keras" not in listed, listed
        assert "sports_classifier" not in listed.replace("-", "_"), listed

        # The Space's run: its environment, no SPORTS_CLASSIFIER_MODELS, models from the Hub.
        port = free_port()
        env = dict(clean)
        env |= {"SYSTEM": "spaces", "SPACE_ID": "alice/sports-space", "SPACE_HOST": f"127.0.0.1:{port}",
                "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "space-home"),
                "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
                "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1",
                "SPORTS_CLASSIFIER_RATE_LIMIT": str(LIMIT), "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}"}
        assert MODELS_ENV not in env
        log = tmp_path / "space.log"
        start = time.perf_counter()
        with open(log, "w") as out:
            proc = subprocess.Popen([str(python), "app.py"], cwd=space, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_for_page(url, proc, log, timeout=180)
            start_s = time.perf_counter() - start

            photo = gradio_client.handle_file(str(ROOT / "examples" / "basketball" / "1.jpg"))
            client = gradio_client.Client(url, verbose=False, headers={"X-Forwarded-For": "81.2.69.1"})
            start = time.perf_counter()
            result = client.predict(photo, [REPO], api_name="/predict")
            first_predict_s = time.perf_counter() - start
            label, note, status = result[0]["value"], result[1]["value"], result[-1]  # labels, notes, status
            assert label["label"] == "basketball", (label, note)
            assert status.startswith("Ready") and "No models" not in status  # plain words; the model is REPO
            # It was pulled from the loopback Hub, and only what serving reads.
            pulled = [r.path for r in hub.hub_requests() if "/resolve/" in r.path]
            assert any(p.endswith("/model.int8.onnx") for p in pulled)
            assert not any(p.endswith("/model.weights.h5") for p in pulled)

            # Behind the Space's proxy each visitor has a budget of its own; the proxy's own
            # address (127.0.0.1 here) would otherwise be exempt or shared by all.
            for _ in range(LIMIT // PER_PREDICT - 1):
                client.predict(photo, [REPO], api_name="/predict")
            with pytest.raises(Exception, match="(?i)too many requests"):  # the upload (429) or the predict
                client.predict(photo, [REPO], api_name="/predict")
            other = gradio_client.Client(url, verbose=False, headers={"X-Forwarded-For": "6.6.6.6, 81.2.69.2"})
            assert other.predict(photo, [REPO], api_name="/predict")[0]["value"]["label"] == "basketball"
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    print(f"\nSpace in a fresh venv: install {install_s:.1f} s (pip, requirements.txt + gradio=={sdk_version}), "
          f"start {start_s:.1f} s (python app.py -> page served), first predict {first_predict_s:.2f} s "
          f"(model pulled from the Hub, loaded, predicted through gradio_client)")
