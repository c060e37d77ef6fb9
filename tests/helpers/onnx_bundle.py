"""A real bundle without TensorFlow: a tiny ONNX network written with ``onnx.helper``, and its
config.json (checksums, labels) and model card written by ``bundle.write_bundle``.

The network: mean colour of the image -> a fixed 3 x classes matrix -> softmax. Enough for
everything that serves a bundle (load, checksum, predict, the app), built in milliseconds.
``hang=True`` adds a ``Loop`` of 10^12 steps before the output (a model that never answers);
its checksum is recorded like any other, so the bundle is valid in every other way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LABELS = ("archery", "bowling", "curling")


def onnx_model_bytes(n_classes: int, *, hang: bool = False, seed: int = 0) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(rng.normal(0, 0.05, (3, n_classes)).astype(np.float32), "w")
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["mean", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs" if hang else "output"], axis=-1),
    ]
    inits = [weights]
    if hang:
        # Loop(max_trip_count=10^12, cond=true) whose body passes a counter through: it runs
        # 10^12 iterations, then hands the probabilities on unchanged.
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array(1.0, np.float32))),
             helper.make_node("Add", ["x_in", "one"], ["x_out"])],
            "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
             helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [])],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [])],
        )
        inits += [numpy_helper.from_array(np.array(10**12, np.int64), "trips"),
                  numpy_helper.from_array(np.array(True), "keep_going"),
                  numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
        nodes += [helper.make_node("Loop", ["trips", "keep_going", "zero"], ["count"], body=body),
                  helper.make_node("Mul", ["count", "zero"], ["nothing"]),
                  helper.make_node("Add", ["probs", "nothing"], ["output"])]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", None, None, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", n_classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def make_onnx_bundle(dest: str | Path, *, labels=LABELS, image_size: int = 32, hang: bool = False,
                     int8_name: bool = False, seed: int = 0, **config) -> Path:
    """Write the bundle at ``dest``; ``int8_name``: store the network as ``model.int8.onnx`` (the
    file served by default) instead of ``model.onnx``; ``seed``: another seed, other weights."""
    from sports_classifier import bundle
    from sports_classifier.config import ModelConfig

    data = onnx_model_bytes(len(labels), hang=hang, seed=seed)
    name = bundle.ONNX_INT8 if int8_name else bundle.ONNX
    cfg = ModelConfig(backbone="tiny_cnn", image_size=image_size, labels=tuple(labels), **config)
    return bundle.write_bundle(dest, cfg, {name: lambda path: Path(path).write_bytes(data)})
