"""Real engine builds with TensorRT-RTX, the CPU-only TensorRT-family builder, through our plan and adapter.

The ONNX files are made by our own exporter (``edgeresnet.export.export_onnx``) and our own TensorRT-style
Q/DQ pass (``edgeresnet.compress.qdq``); ONNX Runtime's default quantization (int32 biases), an op TensorRT
does not have and garbage bytes must fail with one line naming the file and the node. The builds run in a
subprocess (``tests/rtx_build_worker.py``) so a native crash fails a test instead of killing pytest.
Nothing can be executed without a GPU, so the runner is checked up to the point where it needs one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeresnet.errors import UserError
from edgeresnet.trt import rtx

pytestmark = pytest.mark.rtx
RTX = rtx.import_rtx()
if RTX is None:
    pytest.skip(f"TensorRT-RTX wheels are not importable; {rtx.INSTALL_HINT}", allow_module_level=True)

WORKER = Path(__file__).with_name("rtx_build_worker.py")


def run_worker(jobs: list[dict[str, Any]], tmp: Path, timeout: int = 240) -> dict[str, Any]:
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run([sys.executable, str(WORKER), str(tmp / "jobs.json"), str(tmp / "results.json")],
                          capture_output=True, text=True, timeout=timeout)
    results = json.loads((tmp / "results.json").read_text()) if (tmp / "results.json").exists() else {}
    assert proc.returncode == 0 and len(results) == len(jobs), (
        f"worker died (exit {proc.returncode}) after {sorted(results)}:\n{proc.stderr[-3000:]}")
    return results


def export_resnet18(out: Path, exporter: str, batch: tuple[int, int, int] = (1, 4, 8), precision: str = "fp32") -> Path:
    import torch

    from edgeresnet.data.presets import preset_for
    from edgeresnet.export import export_onnx
    from edgeresnet.models import ModelSpec, build_model

    torch.manual_seed(0)
    spec = ModelSpec("resnet18", 10, small_stem=True)
    preprocess = preset_for("digits", 32, tuple(str(i) for i in range(10)))
    opset = 17 if exporter == "torchscript" else None
    return export_onnx(build_model(spec), preprocess, out, opset=opset, batch=batch, exporter=exporter, spec=spec,
                       precision=precision).path


def trt_style_qdq(source: Path, out: Path) -> Path:
    """Our TensorRT Q/DQ placement (float biases) with scales from one ONNX Runtime pass over random images."""
    import onnx
    from onnx import TensorProto, helper

    from edgeresnet.compress import qdq
    from edgeresnet.compress.ptq import ort_session, prepare_float_model

    model, _ = prepare_float_model(onnx.load(str(source)))
    tensors = qdq.float_activations(model)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in tensors if t not in known)
    images = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32)
    session = ort_session(probe)
    values = session.run(tensors, {session.get_inputs()[0].name: images})
    scales = {t: max(float(np.abs(v).max()), 1e-6) / 127.0 for t, v in zip(tensors, values)}
    quantized, _ = qdq.insert_trt_qdq(model, scales)
    onnx.save(quantized, str(out))
    return out


def ort_default_qdq(out: Path) -> Path:
    """A conv classifier quantized by ONNX Runtime's quantize_static with its defaults: int32 conv bias."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "conv.weight"),
             numpy_helper.from_array(rng.normal(size=(8,)).astype(np.float32), "conv.bias"),
             numpy_helper.from_array(rng.normal(size=(10, 8)).astype(np.float32), "fc.weight"),
             numpy_helper.from_array(rng.normal(size=(10,)).astype(np.float32), "fc.bias")]
    nodes = [helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    source = out.with_name("small_float.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat.QDQ)
    return out


def unsupported_op(out: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["r"], name="relu0"),
         helper.make_node("Unique", ["r"], ["logits"], name="my_unique_node", sorted=1)], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n"])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(out))
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("rtx")
    fp32 = export_resnet18(tmp / "resnet18.onnx", "torchscript")
    fp16 = export_resnet18(tmp / "resnet18_fp16.onnx", "torchscript", precision="fp16")
    int8 = trt_style_qdq(fp32, tmp / "resnet18_int8.onnx")
    garbage = tmp / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    jobs = [
        {"name": "fp32", "onnx": str(fp32), "batch": "1:4:8", "out": str(tmp / "resnet18.engine")},
        {"name": "int8", "onnx": str(int8), "precision": "int8", "batch": "1:4:8", "out": str(tmp / "int8.engine")},
        {"name": "fp16", "onnx": str(fp16), "precision": "fp16", "batch": "1:4:8", "out": str(tmp / "fp16.engine")},
        {"name": "ort_qdq", "onnx": str(ort_default_qdq(tmp / "ort_qdq.onnx")), "precision": "int8",
         "out": str(tmp / "ort.engine")},
        {"name": "unsupported", "onnx": str(unsupported_op(tmp / "unique.onnx")), "batch": "1:4:8",
         "out": str(tmp / "u.engine")},
        {"name": "garbage_adapter", "onnx": str(garbage), "batch": "1:4:8", "skip_inspect": True,
         "input_shape": [None, 3, 32, 32], "out": str(tmp / "g.engine")},
        {"name": "garbage_pipeline", "onnx": str(garbage), "batch": "1:4:8", "out": str(tmp / "g2.engine")},
        {"name": "deserialize", "kind": "deserialize", "engine": str(tmp / "resnet18.engine")},
    ]
    return {"tmp": tmp, "results": run_worker(jobs, tmp), "fp32_onnx": fp32, "fp16_onnx": fp16}


def _ok(result: dict[str, Any]) -> dict[str, Any]:
    assert result["ok"], result["error"]
    return result


def test_fp32_dynamic_batch_engine_is_real(built: dict[str, Any]) -> None:
    result = _ok(built["results"]["fp32"])
    assert result["ops"] == ["create_network", "parse_onnx", "profile", "profiling_verbosity", "build"]
    assert result["strongly_typed"] is True
    engine = built["tmp"] / "resnet18.engine"
    data = engine.read_bytes()
    assert len(data) == result["size"] > 40_000_000  # 11.2 M float32 weights are in it
    assert data[:4] == b"vtrt"  # TensorRT-RTX's plan tag (TensorRT's is "ftrt")
    version = tuple(int(p) for p in RTX.__version__.split(".")[:4])
    assert tuple(data[24:28]) == version  # the same header layout as TensorRT: version bytes 24..27
    assert result["header"]["is_plan"] and result["header"]["flavor"] == "tensorrt-rtx"


def test_engine_manifest_records_the_build(built: dict[str, Any]) -> None:
    from edgeresnet.artifacts import sha256_file
    from edgeresnet.trt.engine_manifest import read_engine_manifest

    engine = built["tmp"] / "resnet18.engine"
    manifest = read_engine_manifest(engine)
    assert manifest["sha256"] == sha256_file(engine)
    assert manifest["engine"]["builder"] == "tensorrt-rtx"
    assert manifest["engine"]["tensorrt_version"] == RTX.__version__
    assert manifest["engine"]["profiles"] == [{"input": "input", "min": [1, 3, 32, 32], "opt": [4, 3, 32, 32],
                                               "max": [8, 3, 32, 32]}]
    assert manifest["inputs"]["onnx"]["sha256"] == sha256_file(built["fp32_onnx"])


def test_qdq_int8_engine_uses_int8_weights(built: dict[str, Any]) -> None:
    fp32, int8 = _ok(built["results"]["fp32"]), _ok(built["results"]["int8"])
    assert int8["int8_mode"] == "explicit" and int8["strongly_typed"] is True
    assert int8["size"] < 0.5 * fp32["size"]  # int8 weights: about a quarter of the FP32 engine


def test_fp16_export_builds_a_real_fp16_engine(built: dict[str, Any]) -> None:
    from edgeresnet.trt.engine_manifest import read_engine_manifest

    fp32, fp16 = _ok(built["results"]["fp32"]), _ok(built["results"]["fp16"])
    assert fp16["strongly_typed"] is True and fp16["ops"] == fp32["ops"]
    assert 0.4 * fp32["size"] < fp16["size"] < 0.6 * fp32["size"]  # float16 weights: half the FP32 engine
    assert fp16["header"]["flavor"] == "tensorrt-rtx" and fp16["header"]["declared_size"] == fp16["size"]
    engine = read_engine_manifest(built["tmp"] / "fp16.engine")["engine"]
    assert engine["precision"] == "fp16" and engine["precision_label"] == "fp16"


def test_build_converts_an_fp32_export_to_fp16_on_the_fly(built: dict[str, Any], tmp_path: Path) -> None:
    """``edgeresnet build --precision fp16`` of the FP32 export: TensorRT-RTX is strongly typed, so the command makes
    the FP16 ONNX itself (parity-checked) and builds it; run in a subprocess like the other real builds."""
    from edgeresnet.artifacts import sha256_file
    from edgeresnet.trt.engine_manifest import read_engine_manifest

    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "edgeresnet", "build", str(built["fp32_onnx"]), "--target",
                           "desktop-ada", "--builder", "rtx", "--precision", "fp16", "--batch", "1:4:8", "--out",
                           str(out), "--json", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "COLUMNS": "250", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["built"] and result["plan"]["precision_label"] == "fp16" and result["fp16_conversion"]["written"]
    flat = " ".join(proc.stdout.split())
    assert "builds strongly typed networks (precision comes from the ONNX): converted to FP16 as resnet18.fp16.onnx" in flat
    engine = out / "resnet18.engine"
    data = engine.read_bytes()
    assert data[:4] == b"vtrt" and len(data) < 0.6 * _ok(built["results"]["fp32"])["size"]
    manifest = read_engine_manifest(engine)
    assert manifest["engine"]["precision"] == "fp16" and manifest["engine"]["precision_label"] == "fp16"
    assert manifest["inputs"]["onnx"]["sha256"] == sha256_file(out / "resnet18.fp16.onnx")
    converted = json.loads((out / "resnet18.fp16.onnx.json").read_text())
    assert converted["inputs"]["onnx"]["sha256"] == sha256_file(built["fp32_onnx"])
    assert converted["parity"]["passed"] and converted["parity"]["top1_agreement"] == 1.0


def test_ort_default_qdq_fails_naming_the_bias_node(built: dict[str, Any]) -> None:
    result = built["results"]["ort_qdq"]
    assert not result["ok"] and result["type"] == "UserError"
    error = result["error"]
    assert "ort_qdq.onnx: TensorRT-RTX" in error and "cannot parse node conv.bias_DequantizeLinear (DequantizeLinear)" in error
    assert "input has type Int32" in error and "QuantizeBias" in error and "\n" not in error


def test_unsupported_operator_fails_naming_the_node(built: dict[str, Any]) -> None:
    error = built["results"]["unsupported"]["error"]
    assert "unique.onnx: TensorRT-RTX" in error and "cannot parse node my_unique_node (Unique)" in error
    assert "[UNSUPPORTED_NODE]" in error and "\n" not in error


def test_garbage_fails_in_the_parser_and_in_the_pipeline(built: dict[str, Any]) -> None:
    adapter_error = built["results"]["garbage_adapter"]["error"]
    assert "garbage.onnx: TensorRT-RTX" in adapter_error and "cannot parse the file" in adapter_error
    assert "[MODEL_DESERIALIZE_FAILED]" in adapter_error and "\n" not in adapter_error
    pipeline = built["results"]["garbage_pipeline"]
    assert pipeline["type"] == "UserError" and "garbage.onnx: not an ONNX model" in pipeline["error"]


def test_deserializing_without_a_gpu_is_classified(built: dict[str, Any]) -> None:
    result = built["results"]["deserialize"]
    assert result["kind"] == "no_cuda_driver" and result["type"] == "EngineLoadError"
    assert result["error"].startswith(str(built["tmp"] / "resnet18.engine") + ": ")


def test_runner_checks_the_real_engine_up_to_the_gpu(built: dict[str, Any], tmp_path: Path) -> None:
    from edgeresnet.runners.trt_runner import TrtRunner
    from edgeresnet.trt.cuda_mem import gpu_available

    engine = built["tmp"] / "resnet18.engine"
    if gpu_available():
        pytest.skip("a GPU is usable here; the no-GPU refusal cannot be shown")
    with pytest.raises(UserError, match=r"resnet18.engine: TensorRT engines need a CUDA GPU and none is usable here"):
        TrtRunner.load(engine)

    # a cut copy is refused before TensorRT sees it
    cut = tmp_path / "cut.engine"
    cut.write_bytes(engine.read_bytes()[: 1 << 20])
    shutil.copy(str(engine) + ".json", str(cut) + ".json")
    with pytest.raises(UserError, match=r"cut.engine: cannot run here: the engine is 1048576 bytes but its manifest "
                                        r"says \d+: truncated or replaced; rebuild it: edgeresnet build "):
        TrtRunner.load(cut)

    # an engine whose manifest says another TensorRT-RTX built it
    other = tmp_path / "other.engine"
    shutil.copy(engine, other)
    manifest = json.loads(Path(str(engine) + ".json").read_text())
    manifest["engine"]["tensorrt_version"] = "1.5.0.114"
    Path(str(other) + ".json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"built by TensorRT-RTX 1\.5\.0, this runtime is TensorRT-RTX 1\.7\.1; "
                                        r"rebuild it: edgeresnet build .*resnet18\.onnx --target desktop-ada"):
        TrtRunner.load(other)


@pytest.mark.slow
def test_dynamo_export_builds(tmp_path: Path) -> None:
    """The default (dynamo, opset 20) export also builds; slow because the dynamo exporter takes ~30 s here."""
    onnx_path = export_resnet18(tmp_path / "dynamo.onnx", "dynamo")
    result = run_worker([{"name": "dynamo", "onnx": str(onnx_path), "batch": "1:4:8",
                          "out": str(tmp_path / "dynamo.engine")}], tmp_path)["dynamo"]
    assert _ok(result)["size"] > 40_000_000 and result["header"]["flavor"] == "tensorrt-rtx"
