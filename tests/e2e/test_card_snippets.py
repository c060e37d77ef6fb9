"""Every code block of a pushed model card runs as written (issue 26).

A bundle is pushed to the loopback Hub (tests/helpers/hub_server.py), its README.md is read back
from there (the card as a visitor of the model page sees it, the repo's id filled in by the
push), and each fenced block is run in a fresh process in a folder holding ``photo.jpg``, with
``HF_ENDPOINT`` pointing at that Hub: the Python blocks with ``python -c``, the shell blocks
line by line with bash. The one kind of line not run here is ``pip install <wheel>``: this
process already has the package, and CI's wheel step (.ci/run) installs the wheel that
``python -m build`` makes by exactly that line (``card.install_line``) in a fresh venv.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.hub_server import FakeHub, use_hub
from sports_classifier import bundle
from sports_classifier.card import install_line, is_generated_card
from sports_classifier.classifier import Classifier
from sports_classifier.hub import upload_bundle

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_WriteTokenWriteToken0123456789abcd"
REPO = "alice/sports-tiny"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


@pytest.fixture
def pushed_card(tiny_bundle, monkeypatch, tmp_path):
    hub = FakeHub()
    hub.add_token(TOKEN, write=True)
    with hub:
        use_hub(monkeypatch, hub.url, tmp_path / "hf-home")
        upload_bundle(tiny_bundle, REPO, token=TOKEN)
        card = hub.files(REPO)[bundle.CARD].decode("utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
        env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "reader-home"), "PYTHONPATH": str(ROOT),
                "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        yield card, env


def test_every_block_of_the_pushed_card_runs(pushed_card, tmp_path):
    card, env = pushed_card
    assert is_generated_card(card) and f'"{REPO}"' in card and "user/repo" not in card
    blocks = BLOCK.findall(card)
    kinds = [kind for kind, _ in blocks]
    assert kinds.count("python") == 2 and kinds.count("bash") == 2, kinds
    work = tmp_path / "reader"
    work.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(work / "photo.jpg")
    ran = 0
    for kind, code in blocks:
        if kind == "python":
            done = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True,
                                  text=True, timeout=300)
            assert done.returncode == 0, f"{code}\n---\n{done.stderr[-3000:]}"
            ran += 1
            continue
        assert kind == "bash", kind
        for line in filter(None, (line.strip() for line in code.splitlines())):
            if line.startswith("pip install"):
                assert line in (install_line(), install_line(extra="train")), line
                continue
            done = subprocess.run(["bash", "-c", line], cwd=work, env=env, capture_output=True, text=True,
                                  timeout=300)
            assert done.returncode == 0, f"{line}\n---\n{done.stderr[-3000:]}"
            assert "photo.jpg:" in done.stdout
            ran += 1
    assert ran == 3


def test_the_snippets_comments_say_what_predict_returns(pushed_card, tiny_bundle, tmp_path):
    card, _ = pushed_card
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(photo)
    clf = Classifier.from_pretrained(tiny_bundle)
    one = clf.predict(str(photo), top_k=3)
    many = clf.predict([str(photo), str(photo)], top_k=3)
    # one image: a flat list of (label, probability); a list of images: one such list each
    assert isinstance(one, list) and all(isinstance(label, str) and isinstance(p, float) for label, p in one)
    assert len(many) == 2 and many[0] == one
    assert 'top_k=3)  # one image: [("basketball", 0.97), ("volleyball", 0.01), ...]' in card
    assert "# a list of images: one such list per image" in card
    assert '[[("basketball"' not in card
