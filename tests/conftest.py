"""Shared fixtures: synthetic datasets in tmp folders, a tiny trained bundle, the real data."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from helpers.datasets import make_dataset

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
def tiny_bundle(tmp_path_factory, cache_dir) -> Path:
    """A real bundle (weights, ONNX, metrics, pictures, card) of the tiny test backbone,
    trained for a few epochs on a synthetic 3-class dataset."""
    from sports_classifier.config import TrainConfig
    from sports_classifier.training.loop import train

    data = make_dataset(tmp_path_factory.mktemp("tiny-data"), per_class=(8, 4))
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    config = TrainConfig(backbone="tiny_cnn", weights="none", head_epochs=3, image_size=32)
    train(config, data, out, cache_dir=cache_dir, progress=False)
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "valid").is_dir():
        pytest.skip(f"real images not found at {SHARED_DATA}")
    return SHARED_DATA
