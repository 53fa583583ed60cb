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
from edgeresnet.export.parity import Tolerance

FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
PRECISIONS = ("fp32", "fp16")
KEY_PRECISION = "edgeresnet.precision"  # metadata_props: the precision the export's weights and compute are in
#: FP16 parity against the FP32 model. float16 keeps 11 significant bits (unit roundoff 2**-11 = 4.9e-4, IEEE 754
#: binary16); rounding weights and activations through the ~20 layers of a ResNet compounds to about 1e-3 of the
#: largest logit. Measured on ResNet-18 at 32 px against FP32 PyTorch on 32 digits images: PyTorch CPU ``.half()``
#: (FP16 activations) max-rel 1.2e-3; our FP16 ONNX in ONNX Runtime 1.32 CPU max-rel 5.1e-4: ORT's CPU provider
#: computes float16 nodes in float32 ("Transformer to insert cast node that casts float16 to float for cpu nodes",
#: onnxruntime/core/optimizer/insert_cast_transformer.h), so there it rounds the weights but not every activation.
#: 1e-2 relative plus 1e-2 absolute leaves ~8x headroom over true FP16 arithmetic; top-1 must agree.
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


# -- FP16 on the fly for strongly typed builds ------------------------------------------------------------------


@dataclass
class BuildConversion:
    """What ``fp16_for_build`` did: the spec (and ONNX facts) to plan with, and what to tell the user."""

    spec: Any
    info: Any  # OnnxInfo of the written FP16 ONNX; None in a dry run (nothing written)
    record: dict[str, Any]
    notes: list[str]


def needs_fp16_conversion(spec: Any, features: Any, device: Any) -> bool:
    """True when an FP16 build would be refused only because the network is strongly typed and the ONNX is FP32:
    TensorRT >= 11 and TensorRT-RTX (strong typing mandatory) or ``--typing strong``, no Q/DQ, no FP16 in the
    graph, a device with fast FP16, and ``fp16`` (or ``best`` without calibration input, which is FP16 there)."""
    wants = spec.precision == "fp16" or (spec.precision == "best" and spec.calib_cache is None
                                          and spec.calib_data is None)
    strong = bool(features.strongly_typed_mandatory) or spec.typing == "strong"
    return bool(wants and strong and device.fp16 and not spec.onnx_has_fp16 and not spec.onnx_has_qdq)


def fp16_for_build(spec: Any, features: Any, device: Any, *, out_dir: Any, base: str, write: bool) -> BuildConversion | None:
    """``build --precision fp16`` of an FP32 ONNX on a strongly typed builder: convert it, prove it, plan with it.

    Writes ``OUT/<base>.fp16.onnx`` + manifest only after ONNX Runtime parity against the FP32 ONNX passed at
    ``FP16_TOLERANCE`` on real images of the model's data set (its preprocessing contract is required). With
    ``write=False`` (``--dry-run``) nothing is written and the plan names the file a build would write.
    Returns None when no conversion is needed."""
    from dataclasses import replace
    from pathlib import Path

    if not needs_fp16_conversion(spec, features, device):
        return None
    from edgeresnet.export.onnx_meta import preprocess_of

    src = Path(spec.onnx)
    dst = Path(out_dir) / f"{base}.fp16.onnx"
    preprocess = preprocess_of(src, required=False)
    if preprocess is None:
        raise UserError(f"--precision {spec.precision}: {features.version_string} builds strongly typed networks, "
                        f"which take precision from the ONNX, and {src} is FP32 with no preprocessing contract to "
                        "check an FP16 conversion on real images; export an FP16 model (edgeresnet export "
                        "--precision fp16) or use --precision fp32")
    if dst.resolve() == src.resolve():
        raise UserError(f"--name {base}: the FP16 copy {dst} would overwrite the FP32 input; choose another --name/--out")
    why = (f"{src.name} is FP32 and {features.version_string} builds strongly typed networks (precision comes "
           "from the ONNX)")
    if not write:
        record = {"source": str(src), "onnx": str(dst), "written": False, "tolerance": asdict(FP16_TOLERANCE)}
        note = f"{why}: a build converts it to FP16 as {dst} and checks parity first (--dry-run: not written)"
        return BuildConversion(replace(spec, onnx=str(dst), onnx_has_fp16=True), None, record, [note])

    record = _convert_file(src, dst, preprocess, spec, features)
    from edgeresnet.trt.onnx_info import inspect_onnx

    info = inspect_onnx(dst)
    parity = record["parity"]
    note = (f"{why}: converted to FP16 as {dst.name} (float32 I/O); parity vs the FP32 ONNX in ONNX Runtime on "
            f"{record['images']} {record['data']} images: max-abs {parity['max_abs']:.3g}, max-rel "
            f"{parity['max_rel']:.3g}, top-1 agreement {parity['top1_agreement']:.1%}")
    return BuildConversion(replace(spec, onnx=info.path, onnx_has_fp16=info.has_fp16), info, record, [note])


def _convert_file(src: Any, dst: Any, preprocess: Any, spec: Any, features: Any) -> dict[str, Any]:
    """FP32 ONNX file -> checked FP16 ONNX file + manifest, only if parity passes (else nothing is written)."""
    import onnx

    from edgeresnet.artifacts import atomic_output, build_manifest
    from edgeresnet.export.checkpoint import DEFAULT_PARITY_IMAGES, resolve_data_spec
    from edgeresnet.export.onnx_export import write_manifest_or_remove
    from edgeresnet.export.onnx_meta import load_onnx_model, set_metadata
    from edgeresnet.export.parity import compare_runners, load_parity_images
    from edgeresnet.runners.ort_runner import OrtRunner

    model = load_onnx_model(src, weights=True)
    half, stats = convert_to_fp16(model)
    set_metadata(half, {KEY_PRECISION: "fp16"})
    try:
        onnx.checker.check_model(half, full_check=True)
        half = onnx.shape_inference.infer_shapes(half, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise UserError(f"{src}: the FP16 conversion fails onnx.checker/shape inference ({first[:160]}); "
                        "export FP16 with edgeresnet export --precision fp16", exit_code=1) from exc
    data, _ = resolve_data_spec(None, src)
    lo, _, hi = spec.batch
    batches = sorted({lo, hi})
    images = load_parity_images(data, preprocess, max(DEFAULT_PARITY_IMAGES, hi))
    with atomic_output(dst) as tmp:
        onnx.save_model(half, str(tmp))
        report = compare_runners(OrtRunner.load(src, providers=["CPUExecutionProvider"]),
                                 OrtRunner.load(tmp, providers=["CPUExecutionProvider"]), images, batches,
                                 FP16_TOLERANCE)
        report.a, report.b = f"ort:{src.name}", f"ort:{dst.name}"
        if not report.passed:
            raise UserError(f"--precision {spec.precision}: the FP16 conversion of {src} fails parity against it "
                            f"({report.failure_summary()}); nothing was written; build --precision fp32",
                            exit_code=1)
        manifest = build_manifest(
            "onnx", tmp, command="build", inputs={"onnx": src},
            settings={"precision": "fp16", "io_fp16": False, "converted_for": features.version_string,
                      "data": data, "parity_images": int(images.shape[0]), "tolerance": asdict(FP16_TOLERANCE)},
            extra={"preprocess": preprocess.to_dict(), "precision": "fp16", "fp16": stats.to_dict(),
                   "parity": report.to_dict(), "opset": next((o.version for o in half.opset_import
                                                              if o.domain in ("", "ai.onnx")), 0),
                   "input": {"name": half.graph.input[0].name, "dtype": "float32", "layout": "NCHW"},
                   "output": {"name": half.graph.output[0].name, "dtype": "float32"}},
        )
        manifest["file"] = dst.name
    write_manifest_or_remove(dst, manifest)
    return {"source": str(src), "onnx": str(dst), "written": True, "data": data, "images": int(images.shape[0]),
            "parity": report.to_dict(), "fp16": stats.to_dict(), "sha256": manifest["sha256"]}
