"""Where does int8 lose accuracy? (docs/accuracy.md, "Finding the layers that lose it")

Quantises a bundle's float ONNX model as ``export --format onnx-int8`` does (static QDQ,
per-channel int8 weights, uint8 activations, 200 calibration training images, the head in float),
ranks the tensors by ONNX Runtime's per-tensor SQNR (``qdq_loss_debug``), and re-quantises with
chosen layers left in float. Each variant is compared with the float network on held-out training
images (mean |probability difference|, top-1 agreement) and measured on valid.

    python scripts/int8_sensitivity.py runs/ens/model.onnx --data ../shared/data/sports100 \\
        --worst 10 30 --float-nodes member_0_ member_1_
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def worst_tensors(prepared: Path, int8: Path, sample: np.ndarray, input_name: str, tmp: Path) -> list[str]:
    """The tensors of ``int8`` ranked by their own quantisation error (SQNR, worst first); prints
    the ten worst."""
    from onnxruntime.quantization import qdq_loss_debug as debug

    from sports_classifier.training.export import calibration_reader

    float_aug, int8_aug = tmp / "float-aug.onnx", tmp / "int8-aug.onnx"
    debug.modify_model_output_intermediate_tensors(str(prepared), str(float_aug), save_as_external_data=False)
    debug.modify_model_output_intermediate_tensors(str(int8), str(int8_aug), save_as_external_data=False)
    matched = debug.create_activation_matching(
        debug.collect_activations(str(int8_aug), calibration_reader(sample, input_name)),
        debug.collect_activations(str(float_aug), calibration_reader(sample, input_name)))
    errors = debug.compute_activation_error(matched)
    ranked = sorted((e.get("xmodel_err", 99.0), e.get("qdq_err", 99.0), name) for name, e in errors.items())
    for xmodel, qdq, name in ranked[:10]:
        print(f"  SQNR {xmodel:5.1f} dB (through the int8 model), {qdq:5.1f} dB (this tensor alone): {name}")
    return sorted(errors, key=lambda name: errors[name].get("qdq_err", 99.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a float model.onnx (sports-classifier export --format onnx)")
    parser.add_argument("--data", required=True, help="dataset folder with train/ and valid/")
    parser.add_argument("--worst", type=int, nargs="*", default=[], help="leave the N worst-SQNR tensors' producers in float")
    parser.add_argument("--float-nodes", nargs="*", default=[], help="leave every node whose name contains this in float")
    parser.add_argument("--held-out", type=int, default=600, help="training images (not calibration ones) to compare on")
    args = parser.parse_args()

    import onnx
    from onnxruntime.quantization import quant_pre_process

    from sports_classifier.datasets import discover
    from sports_classifier.images import try_preprocess_many
    from sports_classifier.runtime import OnnxEngine
    from sports_classifier.training.export import (calibration_files, calibration_reader, float_head,
                                                   quantize_prepared)

    source, data = Path(args.model), Path(args.data)
    size = json.loads((source.parent / "config.json").read_text())["image_size"]
    calibration = calibration_files(data / "train", 200)
    rng = np.random.default_rng(1)
    others = sorted(set(map(str, (data / "train").rglob("*.jpg"))) - set(calibration))
    held_out = list(rng.choice(others, args.held_out, replace=False))
    valid = discover(data).frame("valid")
    cal_px, _, _ = try_preprocess_many(calibration, size)
    held_px, _, _ = try_preprocess_many(held_out, size)
    val_px, kept, _ = try_preprocess_many(valid["filepath"].tolist(), size)
    y_valid = valid["class_index"].to_numpy()[kept]
    input_name = OnnxEngine(source, threads=1).input_name

    def run(path, pixels):
        engine = OnnxEngine(path, threads=2)
        return np.concatenate([engine(pixels[i : i + 64]) for i in range(0, len(pixels), 64)])

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepared = tmp / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        head = float_head(graph)
        producer = {out: node.name for node in graph.node for out in node.output}

        def quantise(exclude, out):  # as `export --format onnx-int8`, plus ``exclude`` in float
            quantize_prepared(prepared, out, calibration_reader(cal_px, input_name), keep_float=head + list(exclude))
            return out

        float_held, float_valid = run(source, held_px), run(source, val_px)

        def report(name, path):
            held, val = run(path, held_px), run(path, val_px)
            engine = OnnxEngine(path, threads=2)
            engine(val_px[:32])
            start = time.perf_counter()
            for _ in range(5):
                engine(val_px[:32])
            print(f"{name}: mean |prob diff| vs float (held-out train) {np.abs(held - float_held).sum(1).mean():.4f}, "
                  f"top-1 = float on valid {(val.argmax(1) == float_valid.argmax(1)).mean():.3f}, "
                  f"valid accuracy {(val.argmax(1) == y_valid).mean():.4f}, "
                  f"{160 / (time.perf_counter() - start):.0f} img/s (network only)", flush=True)

        report("float", source)
        base = quantise([], tmp / "int8.onnx")
        report("int8", base)
        if args.worst:
            by_qdq = worst_tensors(prepared, base, cal_px[:32], input_name, tmp)
            for n in args.worst:
                nodes = [producer[t] for t in by_qdq[:n] if t in producer]
                report(f"int8, {n} worst tensors' producers in float", quantise(nodes, tmp / f"worst{n}.onnx"))
        for part in args.float_nodes:
            nodes = [node.name for node in graph.node if part in node.name]
            report(f"int8, {len(nodes)} nodes matching {part!r} in float", quantise(nodes, tmp / "part.onnx"))


if __name__ == "__main__":
    main()
