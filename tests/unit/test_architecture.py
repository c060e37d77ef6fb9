"""The layering rule, enforced: serving (the core and the app's handlers) never imports
TensorFlow, Keras or Gradio, and the core never imports the training layer.

Each check runs in a fresh interpreter, so what another test imported cannot hide a violation.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sports_classifier"
CORE = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
APP = sorted(p.stem for p in (PACKAGE / "app").glob("*.py") if p.stem != "__init__")
HEAVY = ("tensorflow", "keras", "gradio", "ray", "pyarrow")  # ray, pyarrow: the optional ray extra


def loaded_after_import(modules: list[str]) -> set[str]:
    code = ("import sys\n"
            + "".join(f"import {m}\n" for m in modules)
            + "print(' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(out.stdout.split())


def test_the_layers_hold_every_module():
    assert {"classifier", "hub", "runtime", "images", "datasets", "bundle", "cli"} <= set(CORE)
    assert {"registry", "predict", "examples", "compare", "batch", "about"} <= set(APP)
    assert "space" in CORE  # deploys a Space, serves nothing: not in app/ (issue 25)


@pytest.mark.parametrize("layer,modules", [
    ("core", ["sports_classifier"] + [f"sports_classifier.{m}" for m in CORE]),
    ("app", [f"sports_classifier.app.{m}" for m in APP]),
])
def test_serving_imports_no_tensorflow_keras_or_gradio(layer, modules):
    loaded = loaded_after_import(modules)
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert not heavy, f"importing the {layer} layer loads {heavy[:5]}"
    training = sorted(m for m in loaded if m.startswith(("sports_classifier.training", "sports_classifier.distributed")))
    assert not training, f"importing the {layer} layer loads {training}"


def test_the_models_layer_imports_keras_only_where_networks_are_built():
    loaded = loaded_after_import(["sports_classifier.models.backbones"])
    assert not any(m.split(".")[0] in HEAVY for m in loaded)  # bundles check backbone names with it
