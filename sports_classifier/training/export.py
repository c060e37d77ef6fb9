"""Add fast-inference exports to an existing bundle (``sports-classifier export``).

* ``onnx``: ``model.onnx``, the float32 network, verified against Keras (max |diff| < 1e-4).
* ``onnx-int8``: ``model.int8.onnx``, quantised from ``model.onnx`` with ONNX Runtime: static
  QDQ, int8 weights per output channel, uint8 activations whose ranges are calibrated on real
  training images (min/max, averaged over calibration batches); the dense head and softmax
  stay float32. On EfficientNet-Lite0 this kept
  valid accuracy within 0.5 points, where dynamic or per-tensor quantisation lost 4 to 5
  (docs/benchmark.md). It is only used when asked for (``runtime="onnx-int8"``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import bundle
from ..errors import ExportError
from ..models.network import with_class_maps
from ..runtime import export_onnx, onnxruntime_available

FORMATS = ("onnx", "onnx-int8", "weights-fp16")
CALIBRATION_IMAGES = 200
CALIBRATION_BATCH = 8
FLOAT_OPS = ("Softmax", "MatMul", "Gemm")  # the classification head is left in float32


def export_bundle(path: str | Path, *, formats=("onnx",), calibration: str | Path | None = None,
                  calibration_images: int = CALIBRATION_IMAGES, drop_float_onnx: bool = False) -> list[str]:
    """Export the bundle's network and rewrite the bundle (atomically) with the new files and
    their checksums. Returns report lines.

    ``onnx`` exports the Keras network to ONNX, verified against Keras (max |diff| < 1e-4).
    ``onnx-int8`` quantises ``model.onnx`` (exported first if the bundle lacks it) with
    ``calibration_images`` images spread evenly over ``calibration``: a folder of images,
    searched recursively, or a dataset folder whose ``train/`` split is then used. Never
    calibrate on the split you evaluate on.
    ``weights-fp16`` stores ``model.weights.h5`` with float16 arrays (half the size; Keras loads
    them back into float32 variables), for bundles that ship inside a repository.
    ``drop_float_onnx`` leaves ``model.onnx`` out once the bundle has ``model.int8.onnx``, which
    serves by default (the float model can be exported again at any time).
    """
    formats = tuple(formats)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ExportError(f"unknown export format(s) {unknown}; choose from {list(FORMATS)}")
    path = Path(path)
    config = bundle.read_config(path)
    calibration_paths = None
    if "onnx-int8" in formats:
        if not onnxruntime_available():
            raise ExportError("onnxruntime is not installed: pip install onnxruntime")
        if calibration is None:
            raise ExportError("onnx-int8 needs calibration images (--calibration DIR): a folder of "
                              "training images, or a dataset folder with train/; not the split you "
                              "evaluate on")
        calibration_paths = calibration_files(calibration, calibration_images)
    report = []
    with tempfile.TemporaryDirectory() as tmp:
        present = {name: bundle.member(path, name) for name in bundle.FILES}  # refuses links out
        writers = {
            name: bundle.copy_from(file) for name, file in present.items()
            if name not in (bundle.CONFIG, bundle.CARD) and file is not None
        }
        onnx_path = None
        need_float = "onnx" in formats or not bundle.has_onnx(path, config)
        if need_float:
            onnx_path = Path(tmp) / bundle.ONNX
            model = with_class_maps(bundle.load_keras_model(path, config), config)
            rng = np.random.default_rng(0)
            sample = rng.uniform(0, 255, (8, config.image_size, config.image_size, 3)).astype(np.float32)
            diff = export_onnx(model, onnx_path, sample=sample)
            writers[bundle.ONNX] = bundle.copy_from(onnx_path)
            report.append(f"{bundle.ONNX}: max |probability difference| vs Keras {diff:.1e} "
                          f"({onnx_path.stat().st_size / 2**20:.1f} MB)")
        if "weights-fp16" in formats:
            halved = Path(tmp) / bundle.WEIGHTS
            n = halve_weights(bundle.verified_file(path, config, bundle.WEIGHTS), halved)
            writers[bundle.WEIGHTS] = bundle.copy_from(halved)
            report.append(f"{bundle.WEIGHTS}: {n} arrays stored as float16 "
                          f"({(path / bundle.WEIGHTS).stat().st_size / 2**20:.1f} -> "
                          f"{halved.stat().st_size / 2**20:.1f} MB); check accuracy with "
                          "`evaluate --runtime keras`")
        if "onnx-int8" in formats:
            source = onnx_path or bundle.verified_file(path, config, bundle.ONNX)
            int8_path = Path(tmp) / bundle.ONNX_INT8
            check = quantize_int8(source, int8_path, calibration_paths, config.image_size)
            writers[bundle.ONNX_INT8] = bundle.copy_from(int8_path)
            report.append(
                f"{bundle.ONNX_INT8}: static QDQ int8, per-channel weights, calibrated on "
                f"{len(calibration_paths)} images; on them it agrees with {bundle.ONNX} on the top "
                f"class for {check['top1_agreement']:.1%}, max |probability difference| "
                f"{check['max_abs_diff']:.3f} ({int8_path.stat().st_size / 2**20:.1f} MB). "
                "Check accuracy with `evaluate --runtime onnx-int8` on a held-out split.")
        if drop_float_onnx:
            if bundle.ONNX_INT8 not in writers:
                raise ExportError(f"keeping {bundle.ONNX} is required while the bundle has no "
                                  f"{bundle.ONNX_INT8}: add --format onnx-int8")
            writers.pop(bundle.ONNX, None)
            report.append(f"{bundle.ONNX}: left out ({bundle.ONNX_INT8} serves; "
                          "`export --format onnx` brings it back)")
        bundle.write_bundle(path, config, writers)
    return report


def halve_weights(source: str | Path, dest: str | Path) -> int:
    """Copy a Keras ``.weights.h5`` file with its float32 arrays stored as float16 (groups,
    attributes and other arrays unchanged). Arrays that float16 cannot hold (|x| > 60000) stay
    float32. Returns how many arrays were halved."""
    import h5py

    halved = 0

    def copy(src, out) -> None:
        nonlocal halved
        out.attrs.update(dict(src.attrs))
        for name, item in src.items():
            if isinstance(item, h5py.Group):
                copy(item, out.create_group(name))
                continue
            data = item[()]
            if isinstance(data, np.ndarray) and data.dtype == np.float32 and (
                    data.size == 0 or float(np.max(np.abs(data))) <= 60000.0):
                data = data.astype(np.float16)
                halved += 1
            out.create_dataset(name, data=data).attrs.update(dict(item.attrs))

    with h5py.File(source, "r") as src, h5py.File(dest, "w") as out:
        copy(src, out)
    return halved


def float_head(graph) -> list[str]:
    """Names of the nodes to leave in float32: the dense layers and softmax (``FLOAT_OPS``) and
    every node downstream of a softmax."""
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    keep = {n.name for n in graph.node if n.op_type in FLOAT_OPS}
    todo = [n for n in graph.node if n.op_type == "Softmax"]
    while todo:
        node = todo.pop()
        for output in node.output:
            for after in consumers.get(output, []):
                if after.name not in keep:
                    keep.add(after.name)
                    todo.append(after)
    return sorted(keep)


def calibration_files(folder: str | Path, n: int = CALIBRATION_IMAGES) -> list[str]:
    """``n`` image files spread evenly over ``folder`` (its ``train/`` split if it has one)."""
    from ..images import IMAGE_EXTENSIONS

    root = Path(folder)
    if (root / "train").is_dir():
        root = root / "train"
    if not root.is_dir():
        raise ExportError(f"calibration folder {folder} not found")
    files = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ExportError(f"no images under {root} to calibrate the int8 model on")
    if n < len(files):
        files = [files[i] for i in np.linspace(0, len(files) - 1, n).round().astype(int)]
    return files


def calibration_reader(pixels: np.ndarray, input_name: str):
    """ONNX Runtime's calibration input: ``pixels`` in batches of ``CALIBRATION_BATCH``."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.start = 0

        def get_next(self):
            if self.start >= len(pixels):
                return None
            self.start += CALIBRATION_BATCH
            return {input_name: pixels[self.start - CALIBRATION_BATCH : self.start]}

        def rewind(self):
            self.start = 0

    return Reader()


def quantize_prepared(prepared: str | Path, dest: str | Path, reader, *, keep_float: Sequence[str] = ()) -> None:
    """The one int8 recipe: static QDQ, per-channel int8 weights, uint8 activations whose ranges
    are averaged over the calibration batches; the nodes ``keep_float`` stay float.
    ``prepared``: a model through ``quant_pre_process``."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(str(prepared), str(dest), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=list(keep_float), extra_options={"CalibMovingAverage": True})


def quantize_int8(source: str | Path, dest: str | Path, calibration_paths: list[str], image_size: int) -> dict:
    """Quantise the float ONNX model at ``source`` into ``dest`` (static QDQ, per-channel int8
    weights, uint8 activations calibrated on ``calibration_paths``). Returns how closely the
    int8 model follows the float one on the calibration images. Leaves no file on failure."""
    try:
        import onnx
        from onnxruntime.quantization import quant_pre_process
    except ImportError as exc:  # onnx, and sympy for the shape inference, come with [train]
        raise ExportError(f"int8 quantisation needs {exc.name or exc}: "
                          "pip install 'sports_classifier[train]'") from None

    from ..images import try_preprocess_many
    from ..runtime import OnnxEngine

    pixels, kept, _ = try_preprocess_many(calibration_paths, image_size)
    if not len(kept):
        raise ExportError("none of the calibration images could be read")
    dest = Path(dest)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        out = Path(tmp) / "int8.onnx"
        input_name = OnnxEngine(source, threads=1).input_name
        try:
            # Graph clean-up and ONNX shape inference. ONNX Runtime's symbolic shape inference
            # is skipped: ONNX's own covers these networks, and the symbolic one gives up on an
            # ensemble's Resize, leaving a copy of the model in the working folder when it does.
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            # The head (dense layer, softmax, and whatever follows the softmax, such as an
            # ensemble's average) stays float: it costs nothing, and quantised probabilities
            # would move in steps of 1/255.
            head = float_head(onnx.load(str(prepared)).graph)
            quantize_prepared(prepared, out, calibration_reader(pixels, input_name), keep_float=head)
            expected = OnnxEngine(source)(pixels)
            got = OnnxEngine(out)(pixels)
        except Exception as exc:
            raise ExportError(f"int8 quantisation failed: {type(exc).__name__}: {exc}") from None
        if got.shape != expected.shape or not np.all(np.isfinite(got)):
            raise ExportError(f"int8 model gives outputs of shape {got.shape} (expected {expected.shape}) "
                              "or non-finite values")
        shutil.move(str(out), str(dest))
    return {"top1_agreement": float(np.mean(got.argmax(1) == expected.argmax(1))),
            "max_abs_diff": float(np.max(np.abs(got - expected))), "images": int(len(kept))}
