"""End-to-end tests run on the tiny bundle as training writes it (Keras weights included): they
push, download, tamper with and serve every file of a real bundle. The unit tier's ``tiny_bundle``
is the committed ONNX-only copy (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_bundle(trained_tiny_bundle) -> Path:
    return trained_tiny_bundle
