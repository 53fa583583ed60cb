"""ONNX graph work for INT8: BN folding, TensorRT-style Q/DQ insertion, weight folding, and inspection.

TensorRT's explicit-quantization rules (NvInfer.h IQuantizeLayer; NVIDIA's quant_resnet50 tutorial):
symmetric scales only (zero point 0), per-channel only for weights (axis = output channels), range -128..127,
Q/DQ on the *inputs* of weighted layers, plus a Q/DQ pair on the residual input of each Add so TensorRT can
fuse conv + add. Biases stay float (a real TensorRT-family parser rejects int32 bias DequantizeLinear).
Only onnx and numpy are used here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeresnet.errors import UserError

QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
             "DynamicQuantizeLinear", "QLinearAdd", "QGemm", "QLinearGlobalAveragePool"}
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
MIN_QDQ_OPSET = 13  # per-channel ``axis`` on QuantizeLinear/DequantizeLinear


def opset_of(model: Any) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def quantized_nodes(model: Any) -> list[str]:
    return [n.name or n.op_type for n in model.graph.node if n.op_type in QUANT_OPS]


def check_float_source(model: Any, path: str | Path) -> None:
    """An FP32 model with per-channel-capable opset, or a one-line refusal."""
    found = quantized_nodes(model)
    if found:
        raise UserError(f"MODEL {path}: already quantized ({len(found)} quantization node(s), e.g. {found[0]}); "
                        "pass the FP32 ONNX it was made from")
    if opset_of(model) < MIN_QDQ_OPSET:
        raise UserError(f"MODEL {path}: opset {opset_of(model)} is too old for per-channel Q/DQ; "
                        f"re-export with --opset {MIN_QDQ_OPSET} or newer")


# -- small graph helpers ---------------------------------------------------------------------------
def initializers(model: Any) -> dict[str, Any]:
    return {i.name: i for i in model.graph.initializer}


def constants_to_initializers(model: Any) -> Any:
    """Turn ``Constant`` nodes, and ``Identity`` nodes of initializers, into initializers.

    The legacy exporter emits scales and zero points as Constants, and shares one constant between
    quantizers through Identity nodes; constant-folding passes below need them as initializers.
    """
    from onnx import numpy_helper

    keep = []
    known = {i.name: i for i in model.graph.initializer}
    graph_outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            arr = numpy_helper.to_array(node.attribute[0].t)
            known[node.output[0]] = numpy_helper.from_array(arr, node.output[0])
            model.graph.initializer.append(known[node.output[0]])
        elif node.op_type == "Identity" and node.input[0] in known and node.output[0] not in graph_outputs:
            copy_ = numpy_helper.from_array(numpy_helper.to_array(known[node.input[0]]), node.output[0])
            known[node.output[0]] = copy_
            model.graph.initializer.append(copy_)
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return model


def name_nodes(model: Any) -> Any:
    """Give every node a unique name (ORT's nodes_to_exclude and our reports refer to nodes by name)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)
    return model


def consumers(model: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            out[name].append(node)
    return out


def producers(model: Any) -> dict[str, Any]:
    return {o: node for node in model.graph.node for o in node.output}


def float_activations(model: Any) -> list[str]:
    """Names of the float activation tensors (graph inputs and node outputs) in graph order."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    inits = set(initializers(model))
    names = [i.name for i in model.graph.input if i.name not in inits]
    names += [o for n in model.graph.node for o in n.output if o]
    return [n for n in names if types.get(n, onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT]


# -- BatchNorm folding -----------------------------------------------------------------------------
def fold_batchnorm(model: Any) -> tuple[Any, int]:
    """Fold each BatchNormalization that directly follows a constant-weight Conv into that Conv.

    The folded Conv takes the BN's output name, so tensor names downstream (and calibration caches) stay valid.
    """
    from onnx import helper, numpy_helper

    inits = initializers(model)
    uses = consumers(model)
    prods = producers(model)
    removed: set[int] = set()  # node indices (protobuf wrappers have no stable identity)
    folded = 0
    for index, node in enumerate(model.graph.node):
        if node.op_type != "BatchNormalization" or len(node.output) != 1 and any(node.output[1:]):
            continue
        conv = prods.get(node.input[0])
        if conv is None or conv.op_type != "Conv" or len(uses[conv.output[0]]) != 1:
            continue
        if conv.input[1] not in inits or any(name not in inits for name in node.input[1:5]):
            continue
        scale, bias, mean, var = (numpy_helper.to_array(inits[n]).astype(np.float64) for n in node.input[1:5])
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        b = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
             if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[0]))
        factor = scale / np.sqrt(var + eps)
        new_w = (w * factor.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
        new_b = ((b - mean) * factor + bias).astype(np.float32)
        w_name, b_name = f"{conv.name or conv.output[0]}.folded_weight", f"{conv.name or conv.output[0]}.folded_bias"
        model.graph.initializer.extend([numpy_helper.from_array(new_w, w_name), numpy_helper.from_array(new_b, b_name)])
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        new_conv = helper.make_node("Conv", [conv.input[0], w_name, b_name], [node.output[0]], name=conv.name, **attrs)
        conv.CopyFrom(new_conv)
        removed.add(index)
        folded += 1
    if folded:
        keep = [n for i, n in enumerate(model.graph.node) if i not in removed]
        del model.graph.node[:]
        model.graph.node.extend(keep)
        prune_unused_initializers(model)
    return model, folded


def prune_unused_initializers(model: Any) -> Any:
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    graph_inputs = [i for i in model.graph.input if i.name in used or i.name not in {x.name for x in keep}]
    if len(graph_inputs) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(graph_inputs)
    return model


# -- what TensorRT wants quantized -----------------------------------------------------------------
@dataclass(frozen=True)
class WeightedLayer:
    node: str
    op: str
    activation: str  # the activation input that gets Q/DQ
    weight: str  # the initializer that becomes int8 + DQ
    axis: int  # output-channel axis of the weight


@dataclass(frozen=True)
class ResidualAdd:
    node: str
    residual: str  # the input that gets Q/DQ (the identity/downsample branch)
    main: str  # the input TensorRT fuses with the producing conv


def weighted_layers(model: Any) -> list[WeightedLayer]:
    """Conv/Gemm/MatMul nodes with a constant weight, with the weight's output-channel axis."""
    from onnx import helper

    inits = initializers(model)
    out = []
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in inits:
            out.append(WeightedLayer(node.name, "Conv", node.input[0], node.input[1], 0))
        elif node.op_type == "Gemm" and len(node.input) > 1 and node.input[1] in inits:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("transA", 0):
                continue
            out.append(WeightedLayer(node.name, "Gemm", node.input[0], node.input[1], 0 if attrs.get("transB", 0) else 1))
        elif node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits and node.input[0] not in inits:
            if len(inits[node.input[1]].dims) == 2:
                out.append(WeightedLayer(node.name, "MatMul", node.input[0], node.input[1], 1))
    return out


def residual_adds(model: Any) -> list[ResidualAdd]:
    """Adds of two activations; the residual input is the one with fewer weighted layers behind it.

    Counting weighted layers on the longest path from the graph input tells the identity (or 1x1 downsample)
    branch from the main branch (2-3 convs) without relying on export order or on torchvision names.
    """
    inits = initializers(model)
    prods = producers(model)
    depth: dict[str, int] = {i.name: 0 for i in model.graph.input}
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        d = max((depth.get(name, 0) for name in node.input if name and name not in inits), default=0)
        d += 1 if node.op_type in WEIGHTED_OPS else 0
        for o in node.output:
            depth[o] = d
    out = []
    for node in model.graph.node:
        if node.op_type != "Add" or len(node.input) != 2 or any(n in inits for n in node.input):
            continue
        if any(prods.get(n) is not None and prods[n].op_type == "Constant" for n in node.input):
            continue
        a, b = node.input
        residual, main = (b, a) if depth.get(b, 0) <= depth.get(a, 0) else (a, b)
        out.append(ResidualAdd(node.name, residual, main))
    return out


def quantizable_units(model: Any) -> list[str]:
    """Node names the accuracy gate may keep in float (TensorRT flavour): weighted layers and residual adds."""
    return [w.node for w in weighted_layers(model)] + [r.node for r in residual_adds(model)]


def quantize_weight_per_channel(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 (round half to even, as QuantizeLinear does) and its scales."""
    moved = np.moveaxis(w.astype(np.float32), axis, 0)
    amax = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0 / 127.0).astype(np.float32)
    q = np.clip(np.rint(moved / scale.reshape(-1, *([1] * (moved.ndim - 1)))), -128, 127).astype(np.int8)
    return np.moveaxis(q, 0, axis), scale


def insert_trt_qdq(model: Any, scales: dict[str, float], keep_float: Iterable[str] = ()) -> tuple[Any, dict[str, Any]]:
    """Add TensorRT-placed Q/DQ to a (BN-folded) float model; ``scales`` maps activation tensor -> int8 scale.

    Each quantized activation gets one QuantizeLinear/DequantizeLinear pair shared by the nodes that need it;
    weights become int8 initializers with a per-channel DequantizeLinear; biases are untouched (float).
    """
    from onnx import helper, numpy_helper

    keep = set(keep_float)
    inits = initializers(model)
    layers = [w for w in weighted_layers(model) if w.node not in keep]
    adds = [r for r in residual_adds(model) if r.node not in keep]
    wanted: dict[str, list[tuple[str, str]]] = defaultdict(list)  # activation -> [(node, input)]
    for w in layers:
        wanted[w.activation].append((w.node, w.activation))
    for r in adds:
        wanted[r.residual].append((r.node, r.residual))
    missing = sorted(t for t in wanted if t not in scales)
    if missing:
        raise UserError(f"calibration has no range for tensor(s) {', '.join(missing[:3])}; delete the calibration "
                        "cache and run calibrate again")
    new_nodes: dict[str, list[Any]] = defaultdict(list)  # producer output -> nodes to insert after it
    rename: dict[tuple[str, str], str] = {}
    for tensor, users in wanted.items():
        base = tensor.strip("/").replace("/", "_") or "input"
        s_name, z_name = f"{base}_qdq_scale", f"{base}_qdq_zero_point"
        model.graph.initializer.extend([
            numpy_helper.from_array(np.array(scales[tensor], dtype=np.float32), s_name),
            numpy_helper.from_array(np.array(0, dtype=np.int8), z_name),
        ])
        q_out, dq_out = f"{base}_quantized", f"{base}_dequantized"
        new_nodes[tensor] += [
            helper.make_node("QuantizeLinear", [tensor, s_name, z_name], [q_out], name=f"{base}_QuantizeLinear"),
            helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out], name=f"{base}_DequantizeLinear"),
        ]
        for node_name, inp in users:
            rename[(node_name, inp)] = dq_out
    weight_nodes: dict[str, list[Any]] = defaultdict(list)  # consumer node -> weight DQ nodes before it
    for w in layers:
        arr = numpy_helper.to_array(inits[w.weight])
        q, scale = quantize_weight_per_channel(arr, w.axis)
        q_name, s_name, z_name = f"{w.weight}_int8", f"{w.weight}_scale", f"{w.weight}_zero_point"
        model.graph.initializer.extend([
            numpy_helper.from_array(q, q_name),
            numpy_helper.from_array(scale, s_name),
            numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), z_name),
        ])
        dq_out = f"{w.weight}_dequantized"
        weight_nodes[w.node].append(helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [dq_out],
                                                     name=f"{w.node}_weight_DequantizeLinear", axis=w.axis))
        rename[(w.node, w.weight)] = dq_out
    ordered = []
    graph_inputs = {i.name for i in model.graph.input}
    for tensor in list(new_nodes):
        if tensor in graph_inputs:
            ordered += new_nodes.pop(tensor)
    for node in model.graph.node:
        ordered += weight_nodes.get(node.name, [])
        for i, name in enumerate(node.input):
            if (node.name, name) in rename:
                node.input[i] = rename[(node.name, name)]
        ordered.append(node)
        for o in node.output:
            ordered += new_nodes.pop(o, [])
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    prune_unused_initializers(model)
    summary = {"activations_quantized": len(wanted), "weighted_layers_quantized": len(layers),
               "residual_adds_quantized": len(adds), "kept_in_float": sorted(keep)}
    return model, summary


def fold_weight_quantize(model: Any) -> tuple[Any, int]:
    """Replace ``QuantizeLinear(constant float weight)`` with the int8 initializer it computes.

    The legacy exporter writes fake-quantized weights as float + Q + DQ; folding gives the int8 weight + DQ form
    that is 4x smaller and that both TensorRT and ONNX Runtime read directly.
    """
    from onnx import numpy_helper

    constants_to_initializers(model)
    inits = initializers(model)
    removed: set[int] = set()
    folded = 0
    for index, node in enumerate(model.graph.node):
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits:
            continue
        if any(n not in inits for n in node.input[1:3] if n):
            continue
        x = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        zp = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] else np.zeros((), np.uint8)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and scale.size > 1:
            shape = [1] * x.ndim
            shape[axis] = -1
            scale_b, zp_b = scale.reshape(shape), zp.astype(np.int32).reshape(shape)
        else:
            scale_b, zp_b = scale, zp.astype(np.int32)
        info = np.iinfo(zp.dtype)
        q = np.clip(np.rint(x / scale_b) + zp_b, info.min, info.max).astype(zp.dtype)
        model.graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
        removed.add(index)
        folded += 1
    keep = [n for i, n in enumerate(model.graph.node) if i not in removed]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    prune_unused_initializers(model)
    return model, folded


# -- inspection (tests, manifests, reports) --------------------------------------------------------
def describe_qdq(model: Any) -> dict[str, Any]:
    """What a Q/DQ model quantizes: counts, weight axes, float biases, quantized Conv/Gemm inputs and Add inputs."""
    from onnx import TensorProto, helper

    inits = initializers(model)
    prods = producers(model)
    q_nodes = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq_nodes = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]

    def from_dq(name: str) -> Any:
        p = prods.get(name)
        return p if p is not None and p.op_type == "DequantizeLinear" else None

    def dq_dtype(dq: Any) -> int | None:
        src = dq.input[0]
        if src in inits:
            return inits[src].data_type
        q = prods.get(src)
        if q is not None and q.op_type == "QuantizeLinear" and len(q.input) > 2 and q.input[2] in inits:
            return inits[q.input[2]].data_type
        return None

    weighted = []
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        x_dq = from_dq(node.input[0])
        w_dq = from_dq(node.input[1]) if len(node.input) > 1 else None
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        axis = None
        if w_dq is not None:
            axis = next((helper.get_attribute_value(a) for a in w_dq.attribute if a.name == "axis"), 1)
        weighted.append({
            "node": node.name, "op": node.op_type, "input_quantized": x_dq is not None,
            "weight_quantized": w_dq is not None, "weight_axis": axis,
            "weight_dtype": dq_dtype(w_dq) if w_dq is not None else None,
            "bias_float": bias is None or (bias in inits and inits[bias].data_type == TensorProto.FLOAT),
        })
    adds = []
    for r in residual_adds(_strip_qdq_view(model)):
        node = next(n for n in model.graph.node if n.name == r.node)
        quantized = [from_dq(name) is not None for name in node.input]
        adds.append({"node": r.node, "inputs_quantized": quantized})
    zero_points = []
    for n in q_nodes + dq_nodes:
        if len(n.input) > 2 and n.input[2] in inits:
            from onnx import numpy_helper

            zero_points.append(numpy_helper.to_array(inits[n.input[2]]))
    return {
        "quantize_linear": len(q_nodes), "dequantize_linear": len(dq_nodes),
        "weighted": weighted, "adds": adds,
        "symmetric": all(not np.any(z) for z in zero_points),
        "zero_point_dtypes": sorted({str(z.dtype) for z in zero_points}),
        "int32_tensors": sorted(i.name for i in model.graph.initializer if i.data_type == TensorProto.INT32),
    }


def _strip_qdq_view(model: Any) -> Any:
    """A copy with every Q->DQ (and weight DQ) bypassed, so residual analysis sees the float graph."""
    import copy

    view = copy.deepcopy(model)
    prods = producers(view)
    inits = initializers(view)
    alias: dict[str, str] = {}
    for node in view.graph.node:
        if node.op_type == "DequantizeLinear":
            src = node.input[0]
            q = prods.get(src)
            if q is not None and q.op_type == "QuantizeLinear":
                alias[node.output[0]] = q.input[0]
            elif src in inits:
                alias[node.output[0]] = src
    keep = []
    for node in view.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and (node.output[0] in alias or
                                                                        node.op_type == "QuantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            node.input[i] = alias.get(name, name)
        keep.append(node)
    del view.graph.node[:]
    view.graph.node.extend(keep)
    return view
