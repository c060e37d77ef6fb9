"""The test tiers (tests/tiers.py) and the committed ONNX-only tiny bundles they rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.tiny_bundle import FIXTURES, RECIPES
from tiers import FILES, TESTS, TIERS, tier_of

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_file_has_a_tier():
    """From its folder (tests/<tier>/), or from tests/tiers.py's list until the files move."""
    unplaced = [p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py")
                if p.name not in FILES and not (p.parent.name in TIERS and p.parent.parent.name == "tests")]
    assert unplaced == [], "put them in tests/unit, tests/training or tests/e2e"
    assert set(FILES.values()) <= set(TIERS) and set(TESTS.values()) <= set(TIERS)


def test_a_tier_comes_from_the_list_then_the_folder_then_the_fixtures():
    unit = ROOT / "tests" / "unit"
    assert tier_of(unit / "test_bundle.py", "test_x") == "unit"
    assert tier_of(unit / "test_cli.py", "test_x") == "unit"
    assert tier_of(ROOT / "tests" / "training" / "test_train.py", "test_x") == "training"  # moved
    assert tier_of(ROOT / "tests" / "e2e" / "test_app.py", "test_x") == "e2e"
    assert tier_of(unit / "test_cli.py", "test_train_cli_tiny") == "training"  # a listed test
    assert tier_of(unit / "test_bundle.py", "test_x", ["tmp_path", "trained_tiny_bundle"]) == "training"
    assert tier_of(ROOT / "tests" / "e2e" / "test_hub.py", "test_x", ["trained_tiny_bundle"]) == "e2e"


def test_selecting_the_unit_tier_leaves_out_every_other_tier():
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             "--tier", "unit", str(ROOT / "tests")], capture_output=True, text=True, timeout=300,
                            cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    files = {line.split("::")[0].rsplit("/", 1)[-1] for line in collected}
    assert files and all(tier_of(ROOT / "tests" / "unit" / f, "") == "unit" for f in files)
    assert not any("test_train_cli_tiny" in line or "counts_parameters_in_the_weights_file" in line
                   for line in collected)
    assert any("test_app_handlers.py::test_predict_matches_the_classifier" in line for line in collected)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_the_committed_bundle_is_onnx_only_and_made_by_its_recipe(name):
    from sports_classifier import bundle

    folder = FIXTURES / name
    config = bundle.read_config(folder)
    fields, _ = RECIPES[name]
    assert config.backbone == fields["backbone"]
    assert config.image_size == fields.get("image_size", config.image_size)
    assert not (folder / bundle.WEIGHTS).exists() and set(config.files_sha256) == {bundle.ONNX}
    assert bundle.sha256_file(folder / bundle.ONNX) == config.files_sha256[bundle.ONNX]
    assert sum(f.stat().st_size for f in folder.iterdir()) < 400_000
    if "classes" in fields:
        assert config.labels == tuple(sorted(fields["classes"]))


def test_the_committed_bundle_serves_without_tensorflow():
    code = ("import json, sys; from sports_classifier.classifier import Classifier; "
            f"p = Classifier.from_pretrained({str(FIXTURES / 'tiny3')!r}).predict_files("
            f"[{str(ROOT / 'examples' / 'archery' / '1.jpg')!r}])[0]; "
            "print(json.dumps([p.ok, len(p.top), [m for m in ('tensorflow', 'keras') if m in sys.modules]]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [True, 3, []], result.stderr[-2000:]
