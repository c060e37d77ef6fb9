"""Add fast-inference exports to an existing bundle (``sports-classifier export``).

* ``onnx``: ``model.onnx``, the float32 network, verified against Keras (max |diff| < 1e-4).
* ``onnx-fp16``: ``model.onnx`` with its weights stored as float16 (half the size); it still
  computes in float32. The float model a failed int8 self-check falls back to.
* ``onnx-int8``: ``model.int8.onnx``, quantised from the float network with ONNX Runtime:
  static QDQ, **7-bit** int8 weights per output channel (``reduce_range``), uint8 activations
  whose ranges are calibrated on real training images (min/max, averaged over calibration
  batches); the dense head and softmax stay float32. Plus ``selfcheck.npz``: reference images
  with the float network's answers, which ``Classifier`` runs at load (``selfcheck``).

Why 7-bit weights: on x86 CPUs without VNNI, ONNX Runtime's u8s8 kernels multiply with
``vpmaddubsw``, which adds two u8 x s8 products into a *saturating* int16. With weights in
[-64, 64] the largest pair sum is 2 x 255 x 64 = 32,640 <= 32,767: it cannot saturate, so the
int8 model computes the same integers on every x86 CPU (``max_pair_sum`` checks a file).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import bundle
from ..errors import ExportError, install_extra
from ..models.network import with_class_maps
from ..runtime import OnnxEngine, export_onnx, onnxruntime_available

FORMATS = ("onnx", "onnx-fp16", "onnx-int8", "weights-fp16")
CALIBRATION_IMAGES = 200
CALIBRATION_BATCH = 8
FLOAT_OPS = ("Softmax", "MatMul", "Gemm")  # the classification head is left in float32
# u8s8 without VNNI: two uint8 x int8 products summed into an int16 that saturates.
INT16_MAX = 32767
UINT8_MAX = 255


def export_bundle(path: str | Path, *, formats=("onnx",), calibration: str | Path | None = None,
                  calibration_images: int = CALIBRATION_IMAGES, drop_float_onnx: bool = False) -> list[str]:
    """Export the bundle's network and rewrite the bundle (atomically) with the new files and
    their checksums. Returns report lines.

    ``onnx`` exports the Keras network to ONNX, verified against Keras (max |diff| < 1e-4);
    ``onnx-fp16`` the same with its weights stored in float16.
    ``onnx-int8`` quantises the float network (``quantize_prepared``'s 7-bit recipe) with
    ``calibration_images`` images spread evenly over ``calibration``: a folder of images,
    searched recursively, or a dataset folder whose ``train/`` split is then used (never the
    split you evaluate on); it writes the self-check reference too, and a float ``model.onnx``
    when the bundle has none (the model of close calls, and where the self-check fails).
    ``weights-fp16`` stores ``model.weights.h5`` with float16 arrays (half the size; Keras loads
    them back into float32 variables), for bundles that ship inside a repository.
    ``drop_float_onnx`` leaves ``model.onnx`` out once the bundle has ``model.int8.onnx``.
    """
    formats = tuple(formats)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ExportError(f"unknown export format(s) {unknown}; choose from {list(FORMATS)}")
    path = Path(path)
    config = bundle.read_config(path)
    calibration_paths = _calibration_for(formats, calibration, calibration_images)
    report = []
    with tempfile.TemporaryDirectory() as tmp:
        present = {name: bundle.member(path, name) for name in bundle.FILES}  # refuses links out
        writers = {
            name: bundle.copy_from(file) for name, file in present.items()
            if name not in (bundle.CONFIG, bundle.CARD) and file is not None
        }
        onnx_path = _float_onnx(path, config, formats, Path(tmp), writers, report)
        if "weights-fp16" in formats:
            report.append(_halve_keras_weights(path, config, Path(tmp), writers))
        if "onnx-int8" in formats:
            report.append(_int8(onnx_path, config, calibration_paths, Path(tmp), writers))
        if drop_float_onnx:
            if bundle.ONNX_INT8 not in writers:
                raise ExportError(f"keeping {bundle.ONNX} is required while the bundle has no "
                                  f"{bundle.ONNX_INT8}: add --format onnx-int8")
            writers.pop(bundle.ONNX, None)
            report.append(f"{bundle.ONNX}: left out ({bundle.ONNX_INT8} serves; "
                          "`export --format onnx` brings it back)")
        bundle.write_bundle(path, config, writers)
    return report


def _calibration_for(formats, calibration, calibration_images: int) -> list[str] | None:
    if "onnx-int8" not in formats:
        return None
    if not onnxruntime_available():
        raise ExportError("onnxruntime is not installed: pip install onnxruntime")
    if calibration is None:
        raise ExportError("onnx-int8 needs calibration images (--calibration DIR): a folder of "
                          "training images, or a dataset folder with train/; not the split you "
                          "evaluate on")
    return calibration_files(calibration, calibration_images)


def _float_onnx(path: Path, config, formats, tmp: Path, writers: dict, report: list) -> Path | None:
    """The float32 ONNX network every ONNX format starts from, at a path in ``tmp``; adds
    ``model.onnx`` to ``writers`` when a format asks for it (stored in float16 for onnx-fp16).

    Exported from the Keras weights (an existing model.onnx may be stored in float16, which
    quantisation must not start from); a bundle without Keras weights quantises its float32
    model.onnx as it is."""
    keep_float = ("onnx" in formats or "onnx-fp16" in formats
                  or ("onnx-int8" in formats and not bundle.has_onnx(path, config)))
    if not keep_float and "onnx-int8" not in formats:
        return None
    if bundle.member(path, bundle.WEIGHTS) is None and bundle.has_onnx(path, config) and not (
            {"onnx", "onnx-fp16"} & set(formats)):
        return bundle.verified_file(path, config, bundle.ONNX)  # an ONNX-only bundle
    onnx_path = tmp / "float32.onnx"
    model = with_class_maps(bundle.load_keras_model(path, config), config)
    sample = np.random.default_rng(0).uniform(0, 255, (8, config.image_size, config.image_size, 3)).astype(np.float32)
    line = f"max |probability difference| vs Keras {export_onnx(model, onnx_path, sample=sample):.1e}"
    if "onnx-fp16" in formats:
        stored = tmp / "float16-stored.onnx"
        n = store_onnx_fp16(onnx_path, stored)
        diff16 = float(np.max(np.abs(OnnxEngine(stored)(sample) - OnnxEngine(onnx_path)(sample))))
        writers[bundle.ONNX] = bundle.copy_from(stored)
        report.append(f"{bundle.ONNX}: {n} weight arrays stored as float16, computed in float32, "
                      f"{diff16:.1e} from the float32 export ({line}; {stored.stat().st_size / 2**20:.1f} MB)")
    elif keep_float:
        writers[bundle.ONNX] = bundle.copy_from(onnx_path)
        report.append(f"{bundle.ONNX}: {line} ({onnx_path.stat().st_size / 2**20:.1f} MB)")
    return onnx_path


def _halve_keras_weights(path: Path, config, tmp: Path, writers: dict) -> str:
    halved = tmp / bundle.WEIGHTS
    n = halve_weights(bundle.verified_file(path, config, bundle.WEIGHTS), halved)
    writers[bundle.WEIGHTS] = bundle.copy_from(halved)
    return (f"{bundle.WEIGHTS}: {n} arrays stored as float16 ({(path / bundle.WEIGHTS).stat().st_size / 2**20:.1f} "
            f"-> {halved.stat().st_size / 2**20:.1f} MB); check accuracy with `evaluate --runtime keras`")


def _int8(onnx_path: Path, config, calibration_paths: list[str], tmp: Path, writers: dict) -> str:
    int8_path, reference_path = tmp / bundle.ONNX_INT8, tmp / bundle.SELFCHECK
    check = quantize_int8(onnx_path, int8_path, calibration_paths, config.image_size, reference=reference_path)
    writers[bundle.ONNX_INT8] = bundle.copy_from(int8_path)
    writers[bundle.SELFCHECK] = bundle.copy_from(reference_path)
    return (f"{bundle.ONNX_INT8}: static QDQ, 7-bit per-channel weights (largest u8s8 pair sum "
            f"{check['max_pair_sum']:,} <= {INT16_MAX:,}: cannot saturate), calibrated on "
            f"{len(calibration_paths)} images; on them it agrees with the float network on the top class for "
            f"{check['top1_agreement']:.1%}, max |probability difference| {check['max_abs_diff']:.3f} "
            f"({int8_path.stat().st_size / 2**20:.1f} MB). {bundle.SELFCHECK}: {check['reference_images']} "
            "reference images for the self-check at load. Check accuracy with `evaluate --runtime onnx-int8` "
            "on a held-out split.")


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
    """The one int8 recipe: static QDQ, per-channel 7-bit int8 weights, uint8 activations whose ranges
    are averaged over the calibration batches; the nodes ``keep_float`` stay float.
    ``prepared``: a model through ``quant_pre_process``."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(str(prepared), str(dest), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=True,  # 7-bit weights: no u8s8 saturation (module docstring)
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=list(keep_float), extra_options={"CalibMovingAverage": True})


def quantize_int8(source: str | Path, dest: str | Path, calibration_paths: list[str], image_size: int,
                  *, reference: str | Path | None = None) -> dict:
    """Quantise the float ONNX model at ``source`` into ``dest`` (``quantize_prepared``'s recipe,
    calibrated on ``calibration_paths``) and, when ``reference`` is given, write the self-check
    reference there (``selfcheck.REFERENCE_IMAGES`` of the calibration images, spread evenly).
    Returns how closely the int8 model follows the float one on the calibration images, and its
    largest u8s8 pair sum. Leaves no file on failure."""
    try:
        import onnx
        from onnxruntime.quantization import quant_pre_process
    except ImportError as exc:  # onnx, and sympy for the shape inference, come with [train]
        raise ExportError(f"int8 quantisation needs {exc.name or exc}: {install_extra('train')}") from None

    from .. import selfcheck
    from ..images import try_preprocess_many

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
            float_engine, int8_engine = OnnxEngine(source), OnnxEngine(out)
            expected, got = float_engine(pixels), int8_engine(pixels)
        except Exception as exc:
            raise ExportError(f"int8 quantisation failed: {type(exc).__name__}: {exc}") from None
        if got.shape != expected.shape or not np.all(np.isfinite(got)):
            raise ExportError(f"int8 model gives outputs of shape {got.shape} (expected {expected.shape}) "
                              "or non-finite values")
        pair_sum = max_pair_sum(out)
        if pair_sum > INT16_MAX:
            raise ExportError(f"int8 weights reach a u8s8 pair sum of {pair_sum} > {INT16_MAX}: the model "
                              "would saturate on CPUs without VNNI")
        n_ref = 0
        if reference is not None:
            chosen = np.linspace(0, len(pixels) - 1, min(selfcheck.REFERENCE_IMAGES, len(pixels))).round()
            ref = selfcheck.make_reference(pixels[chosen.astype(int)], float_engine, int8_engine)
            selfcheck.write(ref, reference)
            n_ref = len(ref.pixels)
        shutil.move(str(out), str(dest))
    return {"top1_agreement": float(np.mean(got.argmax(1) == expected.argmax(1))),
            "max_abs_diff": float(np.max(np.abs(got - expected))), "images": int(len(kept)),
            "max_pair_sum": pair_sum, "reference_images": n_ref}


def is_depthwise(node, weight_shape) -> bool:
    """A convolution with one input channel per group: ONNX Runtime runs its int8 form with a
    kernel that widens both operands to int16 and sums in int32 (``MlasConvDepthwiseKernelAvx2``),
    so its weights cannot saturate and keep all 8 bits."""
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return node.op_type == "Conv" and group > 1 and len(weight_shape) == 4 and weight_shape[1] == 1


def depthwise_weights(graph) -> list[str]:
    """Names of the float weights of ``graph``'s depthwise convolutions."""
    shapes = {i.name: list(i.dims) for i in graph.initializer}
    return [n.input[1] for n in graph.node
            if n.op_type == "Conv" and n.input[1] in shapes and is_depthwise(n, shapes[n.input[1]])]


def u8s8_gemm_weights(path: str | Path) -> dict[str, np.ndarray]:
    """The int8 weights of a QDQ model that ONNX Runtime multiplies in its u8s8 GEMM kernels
    (every convolution but the depthwise ones, and matrix products), by name."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: i for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    weights = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm") or len(node.input) < 2:
            continue
        dq = producer.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        array = numpy_helper.to_array(inits[dq.input[0]])
        if array.dtype == np.int8 and not is_depthwise(node, array.shape):
            weights[dq.input[0]] = array
    return weights


def max_pair_sum(path: str | Path) -> int:
    """The largest |a*w + b*w'| a u8s8 GEMM kernel can form from this model's int8 weights and
    uint8 activations a, b (``vpmaddubsw`` sums such pairs into an int16): 0 for a model with
    none. At most 32,767 means the model computes the same integers on every x86 CPU."""
    weights = u8s8_gemm_weights(path)
    if not weights:
        return 0
    largest = max(int(np.abs(w.astype(np.int32)).max()) for w in weights.values())
    return 2 * UINT8_MAX * largest


def store_onnx_fp16(source: str | Path, dest: str | Path, *, min_size: int = 16) -> int:
    """Copy an ONNX model with its float32 weights (initializers of ``min_size`` values or more)
    stored as float16, each read through a Cast back to float32: half the file, the same float32
    arithmetic (ONNX Runtime folds the casts when the session is made). Returns how many arrays
    were halved."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    casts, halved = [], 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        array = numpy_helper.to_array(init)
        if array.size < min_size or float(np.max(np.abs(array))) > 60000.0:
            continue
        name, stored = init.name, f"{init.name}__fp16"
        init.CopyFrom(numpy_helper.from_array(array.astype(np.float16), stored))
        casts.append(helper.make_node("Cast", [stored], [name], to=TensorProto.FLOAT, name=f"{stored}_to_float"))
        halved += 1
    for node in reversed(casts):
        graph.node.insert(0, node)
    onnx.save(model, str(dest))
    return halved
