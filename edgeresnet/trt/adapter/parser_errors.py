"""A failed ONNX parse as one line naming the file, the failing node and what to do about it."""

from __future__ import annotations

from typing import Any

from edgeresnet.errors import UserError
from edgeresnet.trt.adapter.loader import trt_label
from edgeresnet.trt.adapter.logs import error_lines, severity_name


def _onnx_node_label(onnx_path: str, index: int) -> str | None:
    """TensorRT 8.6's ParserError has only the node index: read the node's name from the ONNX graph."""
    try:
        from edgeresnet.export.onnx_meta import load_onnx_model

        graph = load_onnx_model(onnx_path).graph
        node = graph.node[index]
    except Exception:  # a file TensorRT could not parse may not load here either
        return None
    return node.name or f"#{index} {node.op_type}"


def parser_failure(trt: Any, parser: Any, onnx_path: str) -> UserError:
    """The first parser error as one line naming the ONNX file and the failing node."""
    count = int(parser.num_errors)
    parser_error = parser.get_error(0) if count else None
    if parser_error is None:
        return UserError(f"{onnx_path}: {trt_label(trt)} could not parse the model (no error reported); "
                         "re-export it with edgeresnet export")
    code = severity_name(parser_error.code())
    index = int(parser_error.node())
    node_name = operator = ""
    if hasattr(parser_error, "node_name"):  # TensorRT >= 10, RTX
        node_name = str(parser_error.node_name() or "")
        operator = str(parser_error.node_operator() or "")
    elif index >= 0:
        node_name = _onnx_node_label(onnx_path, index) or ""
    lines = error_lines(parser_error.desc())
    detail = "; ".join(lines[:2]) or code
    more = f" (+{count - 1} more)" if count > 1 else ""
    if index < 0 or code == "MODEL_DESERIALIZE_FAILED":
        where = "the file"
        if code == "MODEL_DESERIALIZE_FAILED":
            hint = "it is not a readable ONNX model; re-export it with edgeresnet export"
        else:
            hint = "check the path and re-export it with edgeresnet export"
    else:
        where = f"node {node_name or '#' + str(index)}" + (f" ({operator})" if operator else "")
        if "Int32" in detail and (operator == "DequantizeLinear" or "bias" in node_name):
            hint = ("TensorRT takes Q/DQ models with float biases; re-quantize without bias quantization "
                    "(ONNX Runtime: extra_options={'QuantizeBias': False}, as edgeresnet calibrate does)")
        elif code.startswith("UNSUPPORTED"):
            hint = f"{trt_label(trt)} does not support this operator; re-export without it or with a lower --opset"
        else:
            hint = "re-export the model with edgeresnet export"
    return UserError(f"{onnx_path}: {trt_label(trt)} cannot parse {where}: {detail} [{code}]{more}; {hint}")
