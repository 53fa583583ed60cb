"""Small real ONNX classifiers for the TensorRT-planning tests, made with ``onnx.helper`` (fast, no torch).

The graph is a real image classifier (Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm) that passes
``onnx.checker``; ``qdq=True`` adds a symmetric INT8 QuantizeLinear/DequantizeLinear pair on the input, the
way explicit-quantization models carry their scales.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def make_classifier_onnx(
    path: Path, *, opset: int = 17, batch: int | None = None, size: int = 32, classes: int = 10, qdq: bool = False,
    fp16_cast: bool = False, preprocess: dict | None = None,
) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv.weight")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "conv.bias")
    fw = numpy_helper.from_array(rng.standard_normal((classes, 4)).astype(np.float32), "fc.weight")
    fb = numpy_helper.from_array(np.zeros(classes, np.float32), "fc.bias")
    inits = [w, b, fw, fb]
    nodes = []
    x = "input"
    if qdq:
        inits += [numpy_helper.from_array(np.array(1 / 64, np.float32), "in.scale"),
                  numpy_helper.from_array(np.array(0, np.int8), "in.zero")]
        nodes += [helper.make_node("QuantizeLinear", ["input", "in.scale", "in.zero"], ["in.q"], name="in_q"),
                  helper.make_node("DequantizeLinear", ["in.q", "in.scale", "in.zero"], ["in.dq"], name="in_dq")]
        x = "in.dq"
    if fp16_cast:
        nodes += [helper.make_node("Cast", [x], ["x16"], to=TensorProto.FLOAT16, name="to16"),
                  helper.make_node("Cast", ["x16"], ["x32"], to=TensorProto.FLOAT, name="to32")]
        x = "x32"
    nodes += [
        helper.make_node("Conv", [x, "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1, name="fc"),
    ]
    dim0 = batch if batch is not None else "batch"
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [dim0, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [dim0, classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgeresnet-test")
    model.ir_version = 8
    if preprocess is not None:
        entry = model.metadata_props.add()
        entry.key = "edgeresnet.preprocess"
        entry.value = json.dumps(preprocess)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def digits_preprocess(size: int = 32, classes: int = 10) -> dict:
    return {"image_size": size, "resize": size, "mean": [0.3059] * 3, "std": [0.3797] * 3, "channel_order": "RGB",
            "layout": "NCHW", "scale": 1 / 255, "interpolation": "bilinear",
            "class_names": [str(i) for i in range(classes)]}


def imagenet_preprocess(size: int = 224, classes: int = 10) -> dict:
    return {"image_size": size, "resize": round(size * 256 / 224), "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225], "channel_order": "RGB", "layout": "NCHW", "scale": 1 / 255,
            "interpolation": "bilinear", "class_names": [f"c{i}" for i in range(classes)]}
