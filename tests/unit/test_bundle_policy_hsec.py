"""Issue 25.1: ``bundle.py`` owns all bundle policy. No TensorFlow: bundles here are ONNX-only
(tests/helpers/onnx_bundle.py).

- the file names appear nowhere else (a syntax-tree check of the package and app.py);
- one resolver answers "which file serves" (``bundle.serving_file``);
- every read goes through ``bundle.member``: links out, non-regular files and oversized files
  are refused (issue 23, items 1 and 7), and metrics.json is parsed once per version;
- one atomic-write helper (``atomic.py``) replaces every file written in place.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from helpers.source import parse
from helpers.onnx_bundle import make_onnx_bundle
from sports_classifier import atomic, bundle
from sports_classifier.errors import BundleError

ROOT = Path(__file__).resolve().parents[2]
NAMES = set(bundle.FILES) - {bundle.CARD}  # README.md is every repo's, not only a bundle's


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def bundle_names_in(source: str) -> list[str]:
    """String literals (docstrings aside) that are a bundle file's name or end in ``/<name>``."""
    tree = parse(source)
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value.strip()
            if any(text == n or text.endswith("/" + n) for n in NAMES):
                found.append(f"line {node.lineno}: {text!r}")
    return found


def test_the_check_finds_a_planted_name():
    assert bundle_names_in('picture = folder / "confusion_matrix.png"\n') == ["line 1: 'confusion_matrix.png'"]
    assert bundle_names_in('f"{path}/metrics.json"\n')
    assert not bundle_names_in('"""Reads config.json."""\nx = bundle.CONFIG\n')


def test_bundle_file_names_appear_only_in_bundle_py():
    files = [p for p in (ROOT / "sports_classifier").rglob("*.py") if p.name != "bundle.py"] + [ROOT / "app.py"]
    offenders = {str(p.relative_to(ROOT)): hits for p in files if (hits := bundle_names_in(p.read_text()))}
    assert offenders == {}, "use the bundle module's constants and readers: " + json.dumps(offenders, indent=1)


# -- which file serves ------------------------------------------------------------------------------

def _config(*recorded):
    from sports_classifier.config import ModelConfig

    return ModelConfig(backbone="tiny_cnn", image_size=32, labels=("a", "b"),
                       files_sha256={name: "0" * 64 for name in recorded})


@pytest.mark.parametrize("recorded, runtime, ort, expected", [
    ((bundle.WEIGHTS, bundle.ONNX, bundle.ONNX_INT8), "auto", True, bundle.ONNX_INT8),
    ((bundle.WEIGHTS, bundle.ONNX), "auto", True, bundle.ONNX),
    ((bundle.WEIGHTS, bundle.ONNX, bundle.ONNX_INT8), "auto", False, bundle.WEIGHTS),
    ((bundle.WEIGHTS,), "auto", True, bundle.WEIGHTS),
    ((bundle.WEIGHTS, bundle.ONNX, bundle.ONNX_INT8), "onnx", True, bundle.ONNX),
    ((bundle.WEIGHTS,), "onnx-int8", True, bundle.ONNX_INT8),  # named: loading says it is missing
    ((bundle.WEIGHTS, bundle.ONNX_INT8), "keras", True, bundle.WEIGHTS),
])
def test_serving_file_from_the_record(recorded, runtime, ort, expected):
    assert bundle.serving_file(_config(*recorded), runtime, onnxruntime_ok=ort) == expected


def test_serving_file_of_a_local_bundle_needs_the_file_too(tmp_path):
    folder = make_onnx_bundle(tmp_path / "b", int8_name=True)
    config = bundle.read_config(folder)
    assert bundle.serving_file(config, folder=folder) == bundle.ONNX_INT8
    (folder / bundle.ONNX_INT8).unlink()  # recorded, gone: the record alone would name it
    assert bundle.serving_file(config) == bundle.ONNX_INT8
    assert bundle.serving_file(config, folder=folder) == bundle.WEIGHTS


def test_every_reader_asks_the_one_resolver(tmp_path):
    from sports_classifier.classifier import Classifier

    folder = make_onnx_bundle(tmp_path / "b", int8_name=True)
    clf = Classifier.from_pretrained(folder)
    assert clf.model_file == bundle.ONNX_INT8 and clf.runtime == "onnxruntime-int8"
    assert bundle.serving_files(clf.config)[:2] == [bundle.CONFIG, bundle.ONNX_INT8]
    assert bundle.served_runtimes(folder, clf.config) == ["keras", "onnx-int8"]
    for module in ("classifier.py", "bench.py", "app/compare.py", "hub.py"):
        text = (ROOT / "sports_classifier" / module).read_text()
        assert "files_sha256" not in text or module == "hub.py", module  # no reader decides from the record itself


# -- every read through member -------------------------------------------------------------------

@pytest.mark.parametrize("name, size", [(bundle.CONFIG, 2 << 20), (bundle.METRICS, 9 << 20),
                                        (bundle.HISTORY, 3 << 20), (bundle.CURVES, 17 << 20)])
def test_files_over_their_cap_are_refused_before_they_are_read(tmp_path, name, size):
    folder = make_onnx_bundle(tmp_path / "b")
    with open(folder / name, "wb") as fh:
        fh.truncate(size)  # sparse: no disk
    with pytest.raises(BundleError, match="refusing to read it"):
        bundle.member(folder, name)
    assert bundle.member_or_none(folder, name) is None


def test_a_history_linked_out_of_the_bundle_or_not_utf8_is_refused(tmp_path):
    folder = make_onnx_bundle(tmp_path / "b")
    private = tmp_path / "private.csv"
    private.write_text("epoch,accuracy\n1,0.5\n")
    (folder / bundle.HISTORY).symlink_to(private)
    with pytest.raises(BundleError, match="outside the bundle"):
        bundle.read_history(folder)
    (folder / bundle.HISTORY).unlink()
    (folder / bundle.HISTORY).write_bytes(b"epoch,accuracy\n1,\xff\xfe\n")
    with pytest.raises(BundleError, match="not a readable CSV"):
        bundle.read_history(folder)


def test_metrics_are_parsed_once_per_version_and_each_caller_gets_a_copy(tmp_path, monkeypatch):
    folder = make_onnx_bundle(tmp_path / "b")
    bundle.update_metrics(folder, "valid", {"accuracy": 0.5, "engine": "onnxruntime"})
    parsed = []
    real = bundle.read_json
    monkeypatch.setattr(bundle, "read_json", lambda f: parsed.append(f) or real(f))
    first = bundle.read_metrics(folder)
    first["valid"]["accuracy"] = 1.0  # a caller's change stays its own
    assert bundle.read_metrics(folder)["valid"]["accuracy"] == 0.5 and len(parsed) == 1
    bundle.update_metrics(folder, "valid", {"accuracy": 0.75, "engine": "onnxruntime"})
    assert bundle.read_metrics(folder)["valid"]["accuracy"] == 0.75  # a new version is read again


# -- one atomic write ---------------------------------------------------------------------------

OLD_TEMP_NAMES = [".{n}.tmp", ".{n}.{pid}.tmp", ".{n}.tmp-{pid}", ".{n}.{pid}"]


def test_an_atomic_write_never_writes_through_a_planted_link(tmp_path):
    dest = tmp_path / "shared" / "out.csv"
    dest.parent.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    for pattern in OLD_TEMP_NAMES:  # every name the old schemes used
        (dest.parent / pattern.format(n=dest.name, pid=os.getpid())).symlink_to(victim)
    atomic.write_text(dest, "new")
    assert dest.read_text() == "new" and victim.read_text() == "untouched"
    assert oct(dest.stat().st_mode & 0o777) == oct(0o666 & ~atomic._UMASK)


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    dest = tmp_path / "out.json"
    dest.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert dest.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(IsADirectoryError):
        atomic.write_text(folder, "x")
    with pytest.raises(FileExistsError):
        atomic.write_text(dest, "x", overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-folder", "out.json"] and not any(folder.iterdir())


def test_no_module_replaces_files_by_hand():
    """``os.replace`` / ``Path.replace`` of a file appear only in atomic.py and in bundle.py's
    folder swap (and the checkpoint's epoch folder, a folder too)."""
    allowed = {"atomic.py", "bundle.py", "training/checkpoints.py", "space.py"}
    hits = []
    for path in (ROOT / "sports_classifier").rglob("*.py"):
        rel = str(path.relative_to(ROOT / "sports_classifier"))
        if rel in allowed:
            continue
        tree = parse(path.read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "replace"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "os"):
                hits.append(f"{rel}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr == "mkstemp":
                hits.append(f"{rel}:{node.lineno} mkstemp")
    assert hits == []
