"""Shared fixtures: synthetic datasets in tmp folders, the tiny bundle (committed, ONNX-only) and
bundles trained once per session, the real data; and the test tiers (tests/tiers.py)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from helpers.datasets import make_dataset
from helpers.tiny_bundle import TINY_CONFIG, TINY_DATA, copy_of_committed
from sports_classifier.app.gradio_import import skip_stub_rewrite
from tiers import TIERS, file_tiers, tier_of

skip_stub_rewrite()  # the tests that import the app import Gradio as app.py does, in half the time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Every Ray cluster the tests start (tests/helpers/ray_cluster.py, and ray.init()'s local one)
# requires this session's own token: Ray's services listen on all interfaces. Ray reads these
# once, at import, so they are set before anything imports it; they also keep the tests from
# depending on (or writing) the ~/.ray/auth_token that Ray 2.5x creates for a local ray.init().
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data" / "sports100"


@pytest.fixture
def synthetic_dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("feature-cache")
    os.environ["SPORTS_CLASSIFIER_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """The committed ONNX-only tiny bundle (tests/fixtures/tiny: ONNX, metrics, pictures,
    card, no Keras weights), copied once per session: what serving and app tests use, without
    TensorFlow. Tests that change a bundle change their own copy of this one."""
    return copy_of_committed("tiny", tmp_path_factory.mktemp("bundles") / "tiny")


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory, cache_dir):
    """``trained_bundle(config_fields, data=None, name="bundle") -> Path``: a bundle (folder
    ``name``, the model's name in the app) trained once per session for each config
    (``TrainConfig`` fields) and dataset (default: the synthetic 3-class one); a second request
    for the same returns the same folder. Needs TensorFlow."""
    import json

    trained: dict[str, Path] = {}
    synthetic: list[Path] = []

    def train_once(fields: dict, data: Path | None = None, name: str = "bundle") -> Path:
        from sports_classifier.config import TrainConfig
        from sports_classifier.training.loop import train

        if data is None:
            if not synthetic:
                synthetic.append(make_dataset(tmp_path_factory.mktemp("tiny-data"), **TINY_DATA))
            data = synthetic[0]
        key = json.dumps([fields, str(data), name], sort_keys=True, default=str)
        if key not in trained:
            out = tmp_path_factory.mktemp("trained") / name
            train(TrainConfig(**fields), data, out, cache_dir=cache_dir, progress=False)
            trained[key] = out
        return trained[key]

    return train_once


@pytest.fixture(scope="session")
def trained_tiny_bundle(trained_bundle) -> Path:
    """The tiny bundle as training writes it, Keras weights included (what
    scripts/make_tiny_bundle.py starts from): for tests of training, export and the Keras runtime."""
    return trained_bundle(TINY_CONFIG, name="tiny")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "valid").is_dir():
        pytest.skip(f"real images not found at {SHARED_DATA}")
    return SHARED_DATA


# -- tiers (tests/tiers.py) -------------------------------------------------------------------


def pytest_addoption(parser):
    parser.addoption("--tier", action="append", choices=TIERS, default=[],
                     help="run only this tier (repeatable): unit (no TensorFlow, seconds), training, e2e; "
                          "files of other tiers are not even imported")


def pytest_configure(config):
    for tier, what in (("unit", "no TensorFlow, seconds"), ("training", "needs the train extra"),
                       ("e2e", "servers, real images, browser, Hub, Ray")):
        config.addinivalue_line("markers", f"{tier}: test tier: {what} (tests/tiers.py)")


def pytest_ignore_collect(collection_path, config):
    asked = set(config.getoption("--tier"))
    name = collection_path.name
    if asked and collection_path.is_file() and name.startswith("test_") and name.endswith(".py"):
        return not (asked & file_tiers(collection_path))
    return None


def pytest_collection_modifyitems(config, items):
    asked = set(config.getoption("--tier"))
    keep, drop = [], []
    for item in items:
        tier = tier_of(item.path, item.originalname, item.fixturenames)
        item.add_marker(getattr(pytest.mark, tier))
        (keep if not asked or tier in asked else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
