"""Issue 25, part 4 and 6: the caller passes the executor in (no import cycles), the renamed
words keep their old CLI spelling, the import graph script, and the served size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers.bundles import copy_bundle
from sports_classifier import bundle
from sports_classifier.batch import LocalExecutor, predict_dataset
from sports_classifier.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("flag", ["--executor", "--engine"])
def test_the_executor_flag_keeps_its_old_spelling(flag):
    parser = build_parser()
    predict = parser.parse_args(["predict", "--input", "in", "--output", "out.parquet", flag, "ray"])
    train = parser.parse_args(["train", "--data", "d", "--out", "o", flag, "ray"])
    assert predict.executor == train.executor == "ray"
    assert parser.parse_args(["predict", "x.jpg"]).executor == "local"


class CountingExecutor(LocalExecutor):
    """An executor from outside ``batch`` (as the Ray one is): it must be the one that runs."""

    name = "counting"

    def __init__(self):
        super().__init__(threads=1)
        self.calls = []

    def __call__(self, shards, pending, model, **options):
        self.calls.append(list(pending))
        super().__call__(shards, pending, model, **options)
        return {"pending_shards": len(pending)}


def test_predict_dataset_runs_the_executor_its_caller_passes(tiny_bundle, synthetic_dataset, tmp_path):
    executor = CountingExecutor()
    result = predict_dataset(tiny_bundle, synthetic_dataset / "valid", tmp_path / "out.parquet", executor=executor,
                             shard_size=4, progress=False)
    assert executor.calls == [[0, 1, 2]] and result.executor == "counting"
    assert result.extra == {"pending_shards": 3} and result.rows == 9
    again = predict_dataset(tiny_bundle, synthetic_dataset / "valid", tmp_path / "out.parquet", executor=executor,
                            shard_size=4, progress=False)
    assert executor.calls == [[0, 1, 2]] and again.shards_skipped == 3  # nothing pending: not called
    assert predict_dataset(tiny_bundle, synthetic_dataset / "valid", tmp_path / "local.csv",
                           progress=False).executor == "local"


def test_no_module_below_distributed_imports_it():
    """The two cycles (batch <-> distributed.ray_batch, training.features <-> distributed.ray_features)
    are gone: read from the source, imports inside functions included."""
    offenders = []
    for path in sorted((ROOT / "sports_classifier").rglob("*.py")):
        relative = path.relative_to(ROOT / "sports_classifier").as_posix()
        if relative.startswith("distributed/") or relative in ("cli.py", "__main__.py"):
            continue
        if "distributed" in "".join(line for line in path.read_text().splitlines()
                                    if line.lstrip().startswith(("import ", "from "))):
            offenders.append(relative)
    assert offenders == []


def test_import_graph_script_prints_the_layers_and_no_unallowed_upward_import():
    pytest.importorskip("grimp")
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py")], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "NOT ALLOWED" not in result.stdout
    assert "distributed.ray_batch -> batch" in result.stdout  # the executor's side of the old cycle
    assert "bundle -> models.backbones (lazy)  allowed by ignore_imports" in result.stdout


def test_comparison_size_is_the_served_model_file_not_the_whole_folder(tiny_bundle, tmp_path):
    from sports_classifier.speed_accuracy import _served_size

    copy = tmp_path / "tiny"
    copy_bundle(tiny_bundle, copy)
    (copy / bundle.WEIGHTS).write_bytes(b"\0" * 3_000_000)  # weights an ONNX model does not use
    served = bundle.serving_file(bundle.read_config(copy), folder=copy)
    assert _served_size(copy) == (copy / served).stat().st_size < 3_000_000


def test_the_feature_cache_runs_the_executor_its_caller_passes(synthetic_dataset, tmp_path):
    pytest.importorskip("keras")
    import numpy as np

    from sports_classifier.models.network import build_classifier
    from sports_classifier.training.features import FeatureExtractor, View
    from sports_classifier.training.subnetworks import trunk

    net = trunk(build_classifier("tiny_cnn", 3, image_size=32, weights="none"), None)
    paths = sorted(str(p) for p in (synthetic_dataset / "valid").rglob("*.jpg"))
    want = FeatureExtractor(net, image_size=32, cache_dir=tmp_path / "local", progress=False)(paths, View("clean"))
    calls = []

    def executor(paths, onnx_path, *, image_size, view, batch_size, progress, desc):
        calls.append((len(paths), Path(onnx_path).suffix, image_size, view["kind"]))
        return want.values, want.rows, want.skipped

    elsewhere = FeatureExtractor(net, image_size=32, cache_dir=tmp_path / "remote", progress=False, executor=executor)
    got = elsewhere(paths, View("clean"))
    assert calls == [(9, ".onnx", 32, "clean")]
    np.testing.assert_array_equal(got.values, want.values)
    elsewhere(paths, View("clean"))
    assert len(calls) == 1 and elsewhere.hits == 1  # cached as if computed here


def test_the_architecture_picture_names_every_module_in_its_folder():
    """docs/architecture.md's picture is drawn from the code: every module of a folder is in that
    folder's box (batch, app/draw and app/uploads were once missing)."""
    import re

    picture = (ROOT / "docs" / "architecture.md").read_text().split("```")[1]
    boxes = {"app": "app/", "training": "training/", "models": "models/", "distributed": "distributed/"}
    missing = []
    for path in sorted((ROOT / "sports_classifier").rglob("*.py")):
        relative = path.relative_to(ROOT / "sports_classifier")
        if path.stem == "__init__" or "recipes" in relative.parts:
            continue
        folder = relative.parts[0] if len(relative.parts) > 1 else None
        lines = picture.splitlines()
        if folder:  # the lines of that folder's box: from its title to its bottom edge
            start = next(i for i, line in enumerate(lines) if boxes[folder] in line)
            end = next(i for i in range(start, len(lines)) if "└" in lines[i])
            lines = lines[start:end]
        words = set(re.findall(r"[A-Za-z_]+", "\n".join(lines)))
        if path.stem not in words:
            missing.append(relative.as_posix())
    assert missing == []
