"""FP32 ONNX -> FP16 ONNX: weights and compute in float16, the I/O kept float32 unless asked.

Strongly typed TensorRT networks take each tensor's type from the ONNX: TensorRT 10.3 ``NetworkDefinition
CreationFlag.STRONGLY_TYPED`` docstring: "Mark the network to be strongly typed. Every tensor in the network has
a data type defined in the network following only type inference rules and the inputs/operator annotations.
Setting layer precision and layer output types is not allowed, and the network output types will be inferred
based on the input types and the type inference rules." TensorRT 11 and TensorRT-RTX have no other kind of
network and no FP16 builder flag, so an FP16 engine there needs this FP16 graph.

The pass is our own (no onnxconverter-common): every float32 initializer and Constant becomes float16, every
``Cast``/``dtype`` attribute that asks for float32 asks for float16, and a ``Cast`` at the input and the output
keeps the model's interface float32 (``io_fp16=True`` makes the interface float16 instead). Type information is
re-inferred afterwards (``onnx.shape_inference`` in the exporter's check). Ops whose ONNX definition keeps an
input float32 only (Resize/Upsample ``scales``) or that hold subgraphs are refused: ResNet has none of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeresnet.errors import UserError
from edgeresnet.parity import Tolerance

FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
PRECISIONS = ("fp32", "fp16")
KEY_PRECISION = "edgeresnet.precision"  # metadata_props: the precision the export's weights and compute are in
#: FP16 parity against the FP32 model. float16 keeps 11 significant bits (unit roundoff 2**-11 = 4.9e-4, IEEE 754
#: binary16); rounding every weight and activation through the ~20 layers of a ResNet compounds to a few 1e-4 of
#: the largest logit (measured: max-rel 5.1e-4, ResNet-18 at 32 px, ONNX Runtime 1.32 CPU vs PyTorch FP32), so
#: 1e-2 relative plus 1e-2 absolute leaves ~20x headroom for GPU kernels that also accumulate in FP16; top-1 must
#: still agree.
FP16_TOLERANCE = Tolerance(atol=1e-2, rtol=1e-2, min_agreement=0.99)
FP16_MAX = float(np.finfo(np.float16).max)  # 65504
#: ONNX operator definitions whose listed input is float32 by type constraint, not T (Resize-13 ``scales`` is
#: "tensor(float)"; Upsample-9 ``scales`` likewise); converting it would make the model invalid.
_FLOAT32_ONLY_INPUTS = {"Resize": (2,), "Upsample": (1,)}
_SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})
INPUT_SUFFIX, OUTPUT_SUFFIX = "_fp16", "_fp16"


@dataclass
class Fp16Stats:
    """What the conversion changed, for the manifest."""

    io_fp16: bool
    initializers: int = 0
    constants: int = 0
    casts_retargeted: int = 0
    values_converted: int = 0
    underflow_to_zero: int = 0  # nonzero float32 weights that are 0 in float16 (|w| < 2**-25)
    max_abs_weight: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"tool": "edgeresnet.export.fp16", **asdict(self)}


def check_precision(precision: str, io_fp16: bool) -> None:
    """``--precision`` is fp32 or fp16, and ``--io-fp16`` only makes sense with fp16."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r}: choose fp32 or fp16 (INT8 comes from edgeresnet calibrate or qat)")
    if io_fp16 and precision != "fp16":
        raise UserError("--io-fp16: float16 inputs and outputs need --precision fp16; add it or drop --io-fp16")


def _to_fp16(array: np.ndarray, where: str, stats: Fp16Stats) -> np.ndarray:
    peak = float(np.abs(array).max()) if array.size else 0.0
    if not np.isfinite(peak) or peak > FP16_MAX:
        raise UserError(f"--precision fp16: {where} holds {peak:.4g}, beyond float16's range (+-{FP16_MAX:g}); "
                        "export FP32 (--precision fp32) for this model", exit_code=1)
    half = array.astype(np.float16)
    stats.underflow_to_zero += int(np.count_nonzero((array != 0) & (half == 0)))
    stats.values_converted += int(array.size)
    stats.max_abs_weight = max(stats.max_abs_weight, peak)
    return half


def convert_to_fp16(model: Any, *, io_fp16: bool = False, input_name: str | None = None,
                    output_name: str | None = None) -> tuple[Any, Fp16Stats]:
    """A float16 copy of ``model`` (an ``onnx.ModelProto``; the original is not changed) and what changed.

    ``input_name``/``output_name`` default to the graph's single (non-initializer) input and single output.
    """
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.ModelProto()
    proto.CopyFrom(model)
    graph = proto.graph
    stats = Fp16Stats(io_fp16=io_fp16)
    init_names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise UserError(f"--precision fp16: the FP16 pass handles one input and one output, the model has "
                        f"{len(inputs)} and {len(graph.output)}", exit_code=1)
    graph_in, graph_out = inputs[0], graph.output[0]
    input_name, output_name = input_name or graph_in.name, output_name or graph_out.name
    for value in (graph_in, graph_out):
        if value.type.tensor_type.elem_type != FLOAT:
            raise UserError(f"--precision fp16: {value.name} is not float32 (elem_type "
                            f"{value.type.tensor_type.elem_type}); the model is not an FP32 export", exit_code=1)

    keep_fp32: set[str] = set()
    for node in graph.node:
        if node.op_type in _SUBGRAPH_OPS or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                               for a in node.attribute):
            raise UserError(f"--precision fp16: node {node.name or node.op_type} ({node.op_type}) holds a subgraph, "
                            "which the FP16 pass does not convert; export FP32", exit_code=1)
        for index in _FLOAT32_ONLY_INPUTS.get(node.op_type, ()):
            if index < len(node.input) and node.input[index]:
                if node.input[index] not in init_names:
                    raise UserError(f"--precision fp16: node {node.name or node.op_type} ({node.op_type}) computes a "
                                    "float32-only input; export FP32", exit_code=1)
                keep_fp32.add(node.input[index])

    for init in graph.initializer:
        if init.data_type == FLOAT and init.name not in keep_fp32:
            half = _to_fp16(numpy_helper.to_array(init), f"initializer {init.name}", stats)
            init.CopyFrom(numpy_helper.from_array(half, init.name))
            stats.initializers += 1

    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == FLOAT:
                where = f"node {node.name or node.op_type} attribute {attr.name}"
                attr.t.CopyFrom(numpy_helper.from_array(_to_fp16(numpy_helper.to_array(attr.t), where, stats),
                                                        attr.t.name))
                stats.constants += 1
            elif attr.name in ("to", "dtype") and attr.type == onnx.AttributeProto.INT and attr.i == FLOAT:
                attr.i = FLOAT16
                stats.casts_retargeted += 1
        if node.op_type == "Constant":
            for attr in list(node.attribute):
                if attr.name in ("value_float", "value_floats"):
                    values = np.asarray(attr.f if attr.name == "value_float" else list(attr.floats), np.float32)
                    half = _to_fp16(values, f"node {node.name or 'Constant'} attribute {attr.name}", stats)
                    node.attribute.remove(attr)
                    node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(half)))
                    stats.constants += 1

    if io_fp16:
        graph_in.type.tensor_type.elem_type = FLOAT16
        graph_out.type.tensor_type.elem_type = FLOAT16
    else:
        inner_in, inner_out = input_name + INPUT_SUFFIX, output_name + OUTPUT_SUFFIX
        taken = {o for n in graph.node for o in n.output} | init_names | {i.name for i in graph.input}
        if inner_in in taken or inner_out in taken:
            raise UserError(f"--precision fp16: the graph already has a tensor named {inner_in} or {inner_out}",
                            exit_code=1)
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == input_name:
                    node.input[i] = inner_in
                elif name == output_name:
                    node.input[i] = inner_out
            for i, name in enumerate(node.output):
                if name == output_name:
                    node.output[i] = inner_out
        nodes = [helper.make_node("Cast", [input_name], [inner_in], to=FLOAT16, name="edgeresnet_input_to_fp16"),
                 *graph.node,
                 helper.make_node("Cast", [inner_out], [output_name], to=FLOAT, name="edgeresnet_logits_to_fp32")]
        del graph.node[:]
        graph.node.extend(nodes)
    del graph.value_info[:]  # re-inferred with the new types by onnx.shape_inference
    return proto, stats
