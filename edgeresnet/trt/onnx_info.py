"""What the build plan needs to know about an ONNX file: input name and shape, opset, Q/DQ, FP16.

``onnx`` is imported inside the functions; a file that is not a model becomes a one-line UserError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError
from edgeresnet.export.onnx_meta import load_onnx_model

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
_FLOAT16 = 10  # onnx.TensorProto.FLOAT16
_ELEM_NAMES = {1: "float32", 10: "float16", 16: "bfloat16", 11: "float64", 7: "int64", 6: "int32", 3: "int8", 2: "uint8"}


@dataclass(frozen=True)
class OnnxInfo:
    """The facts of one ONNX model that decide how it is built."""

    path: str
    input_name: str
    input_shape: tuple[int | None, ...]  # None marks a dynamic dimension
    input_dtype: str
    output_names: tuple[str, ...]
    opset: int
    has_qdq: bool
    has_fp16: bool
    metadata: dict[str, str] = field(default_factory=dict)

    def preprocess_dict(self) -> dict[str, Any] | None:
        """The preprocessing contract if the exporter stored it in ``metadata_props`` as JSON."""
        for key, value in self.metadata.items():
            if "preprocess" in key.lower():
                try:
                    data = json.loads(value)
                except (TypeError, ValueError):
                    continue
                if isinstance(data, dict):
                    return data
        return None


def inspect_onnx(path: str | Path) -> OnnxInfo:
    """Read ``path`` (no external data) and summarise it; raises UserError if it is not a usable model."""
    p = Path(path)
    model = load_onnx_model(p, check=True)
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [inp for inp in graph.input if inp.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise UserError(f"{p}: expected one image input, found {len(inputs)} ({names}); export a single-input classifier")
    inp = inputs[0]
    tensor_type = inp.type.tensor_type
    shape: list[int | None] = []
    for dim in tensor_type.shape.dim:
        shape.append(int(dim.dim_value) if dim.HasField("dim_value") and dim.dim_value > 0 else None)
    opset = 0
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            opset = int(entry.version)
    nodes = list(graph.node)
    for function in model.functions:
        nodes.extend(function.node)
    has_qdq = any(node.op_type in QDQ_OPS for node in nodes)
    has_fp16 = tensor_type.elem_type == _FLOAT16 or any(init.data_type == _FLOAT16 for init in graph.initializer)
    if not has_fp16:
        for node in nodes:
            if node.op_type == "Cast" and any(a.name == "to" and a.i == _FLOAT16 for a in node.attribute):
                has_fp16 = True
                break
    return OnnxInfo(
        path=str(p),
        input_name=inp.name,
        input_shape=tuple(shape),
        input_dtype=_ELEM_NAMES.get(tensor_type.elem_type, str(tensor_type.elem_type)),
        output_names=tuple(o.name for o in graph.output),
        opset=opset,
        has_qdq=has_qdq,
        has_fp16=has_fp16,
        metadata={prop.key: prop.value for prop in model.metadata_props},
    )


def onnx_has_qdq(path: str | Path) -> bool:
    """True when the model carries QuantizeLinear/DequantizeLinear nodes (explicit INT8 scales)."""
    return inspect_onnx(path).has_qdq
