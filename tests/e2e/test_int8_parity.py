"""The bundled models as served match their float networks, on whatever CPU runs this (issue 22).

Served: ``runtime="auto"``, the int8 model after its self-check, close calls re-run in float.
Float: the bundle's float ONNX model (the Keras weights exported, stored in float16, computed
in float32). On the 500 valid images, served accuracy is within one image of float and the two
agree on the top class for at least 99.4 % of images. And the int8 weights cannot saturate a
u8s8 kernel, checked on the files themselves, so the property holds on CPUs this test never
runs on.
"""

from pathlib import Path

import numpy as np
import pytest

from sports_classifier import bundle
from sports_classifier.classifier import Classifier
from sports_classifier.hardware import describe, measured_on

MODELS = Path(__file__).resolve().parents[2] / "models"
BUNDLED = sorted(p.name for p in MODELS.iterdir() if (p / bundle.CONFIG).is_file())
INT16_MAX = 32767


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_int8_weights_cannot_saturate(name):
    from sports_classifier.training.export import max_pair_sum

    assert max_pair_sum(MODELS / name / bundle.ONNX_INT8) <= INT16_MAX


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_as_served_matches_its_float_network(name, shared_data):
    from sports_classifier.datasets import discover

    served = Classifier.from_pretrained(MODELS / name)
    assert served.runtime == "onnxruntime-int8", served.serving_summary
    assert served.selfcheck is not None and served.selfcheck.passed, served.selfcheck.describe()
    exact = Classifier.from_pretrained(MODELS / name, runtime="onnx")

    frame = discover(shared_data).frame("valid")
    index = {label: i for i, label in enumerate(served.labels)}
    y = frame["label"].map(index).to_numpy()
    files = frame["filepath"].tolist()
    p_served, rows, _ = served.score_files(files)
    p_float, rows_float, _ = exact.score_files(files)
    assert list(rows) == list(rows_float) and len(rows) == len(files)
    acc_served = float(np.mean(p_served.argmax(1) == y[rows]))
    acc_float = float(np.mean(p_float.argmax(1) == y[rows]))
    agreement = float(np.mean(p_served.argmax(1) == p_float.argmax(1)))
    where = describe(measured_on(served.threads))
    print(f"{name} on {where}: served {acc_served:.4f}, float {acc_float:.4f}, agreement {agreement:.4f}, "
          f"close calls {served._engine.close_calls}/{served._engine.images}")
    assert abs(acc_served - acc_float) <= 1 / len(files) + 1e-9, (acc_served, acc_float, where)
    assert agreement >= 0.994, (agreement, where)
