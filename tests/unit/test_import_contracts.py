"""The layering of docs/architecture.md as import-linter contracts (pyproject.toml's
[tool.importlinter]): they hold on the tree, and they break when an upward import is planted,
in a copy of the package in tmp_path, never in the tree. Needs import-linter (dev extra)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[2]
RUN = ("import sys; from importlinter.cli import lint_imports; "
       "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")


def lint_imports(where: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package under ``where`` (its pyproject.toml and sports_classifier/)."""
    env = dict(os.environ, PYTHONPATH=str(where))
    return subprocess.run([sys.executable, "-c", RUN], cwd=where, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_tree_keeps_every_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.fixture
def package_copy(tmp_path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "sports_classifier", tmp_path / "sports_classifier",
                    ignore=shutil.ignore_patterns("__pycache__", "*.h5", "*.json", "*.md"))
    return tmp_path


# (module that gets the import, the import, the contract it breaks)
PLANTED = [
    # the old cycle, inside a function: import-linter sees it there too
    ("batch.py", "from .distributed import ray_batch", "Layers run one way"),
    ("training/features.py", "from ..distributed import ray_features", "Layers run one way"),
    ("images.py", "from .training import loop", "Layers run one way"),  # core -> training
    ("models/network.py", "from ..app import registry", "Layers run one way"),  # models -> app
    ("app/predict.py", "from ..training import export", "Layers run one way"),  # app and training are independent
    ("training/loop.py", "import ray", "Only distributed/ imports Ray"),
    ("classifier.py", "import keras", "Serving modules import neither"),
]


@pytest.mark.parametrize("module, statement, contract", PLANTED, ids=[p[0] + ": " + p[1] for p in PLANTED])
def test_a_planted_upward_import_breaks_a_contract(package_copy, module, statement, contract):
    target = package_copy / "sports_classifier" / module
    target.write_text(target.read_text() + f"\n\ndef _planted():\n    {statement}\n")
    result = lint_imports(package_copy)
    assert result.returncode != 0, result.stdout[-3000:]
    broken = [line for line in result.stdout.splitlines() if " BROKEN" in line]
    assert len(broken) == 1 and broken[0].startswith(contract), result.stdout[-3000:]
    importer = "sports_classifier." + module.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> " in result.stdout  # the report names the planted import


def test_a_new_top_level_module_must_be_placed_in_a_layer(package_copy):
    (package_copy / "sports_classifier" / "newcomer.py").write_text('"""Not in any layer yet."""\n')
    result = lint_imports(package_copy)
    assert result.returncode != 0 and "newcomer" in result.stdout + result.stderr, result.stdout[-3000:]
