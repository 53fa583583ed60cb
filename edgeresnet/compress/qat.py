"""Quantization-aware training the way TensorRT executes INT8 (``edgeresnet qat``).

Our own small fake-quant modules on ``torch.fake_quantize_per_channel_affine`` / ``_per_tensor_affine`` with
range -128..127: the legacy (TorchScript) ONNX exporter maps exactly these to QuantizeLinear/DequantizeLinear
at opset >= 13, on CPU. The libraries were weighed and not used (facts measured on torch 2.14.1):
``torch.ao.quantization`` is deprecated and its FX QAT leaves BatchNorm unfolded and exports Q/DQ only with a
custom QConfig; torchao's pt2e path exports only through dynamo (opset >= 18, which older TensorRT cannot
parse) and only with the deprecated XNNPACKQuantizer, whose placement (outputs quantized, add outputs
quantized) is XNNPACK's, not TensorRT's; ModelOpt's CPU export leaves BN unfolded and its dynamo export fails.

What this module does to a trained model:
1. swaps in the fake-quant layers of ``fake_quant`` (``quantize_model``); BatchNorm stays a module while
   training (see ``quantize_model`` for why that is exact);
2. calibrates the activation ranges (max / percentile / entropy) on training images, then fine-tunes a few
   epochs at a low learning rate with the training helper's ``fit`` (ranges stay fixed, as in NVIDIA's
   pytorch-quantization); the calibrated model counts as "epoch 0", so fine-tuning is kept only if it helps;
3. folds every BatchNorm into its conv in an export copy (as TensorRT would; the graph is then Conv-only,
   which ONNX Runtime also runs fast), exports Q/DQ ONNX with the legacy exporter (opset 13 by default) and
   folds the weight QuantizeLinear into int8 initializers.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn

from edgeresnet.compress import calibration as cal
from edgeresnet.compress.fake_quant import (
    QuantConv2d,
    QuantLinear,
    fold_batchnorms,
    is_qat_state,
    quantize_model,
    quantizers,
    set_float_units,
    units,
    weight_scale,
)
from edgeresnet.compress.int8_accuracy import (
    Int8Report,
    eval_splits,
    fused_kernels_top1,
    int8_speedup,
    measure_accuracy,
)
from edgeresnet.compress.onnx_calibration import BatchSource
from edgeresnet.compress.ort_cpu import ort_session, run_logits
from edgeresnet.compress.sensitivity import Progress, run_gate
from edgeresnet.data.sources import BUILTIN_SOURCES
from edgeresnet.errors import UserError
from edgeresnet.evaluate import top1
from edgeresnet.export.torch_compat import torchscript_kwargs  # dynamo=False only where torch names it (>= 2.4)

DEFAULT_OPSET = 13
QAT_BATCH_PROFILE_TEXT = "1:8:32"  # dynamic batch, as `edgeresnet export --dynamic-batch 1:8:32`


def check_opset(opset: int) -> None:
    """Q/DQ with a per-channel axis needs opset 13; the legacy exporter stops at 20."""
    if not 13 <= opset <= 20:
        raise UserError(f"--opset {opset}: Q/DQ export needs opset 13..20 (per-channel axis from 13); use 13 or 17")


def calibrate_model(model: nn.Module, batches: Callable[[], Iterator[np.ndarray]], method: str,
                    percentile: float = cal.DEFAULT_PERCENTILE,
                    progress: Progress | None = None, total_batches: int = 0) -> dict[str, float]:
    """Set every activation quantizer's range from the calibration images (1 pass for max, 2 otherwise)."""
    cal.check_method(method)
    qs = quantizers(model)
    collector = cal.StatsCollector(list(qs), method)
    current: dict[str, Any] = {}
    sees_input: set[str] = set()  # quantizers of the model input: their range is set by preprocessing

    def observer(name: str) -> Callable[[torch.Tensor], None]:
        def observe(x: torch.Tensor) -> None:
            if x.data_ptr() == current["input"].data_ptr():
                sees_input.add(name)
            collector.update(name, x.cpu().numpy())
        return observe

    for name, q in qs.items():
        q.observer = observer(name)
    model.eval()
    done = 0
    try:
        with torch.no_grad():
            for number in range(1, collector.passes + 1):
                collector.begin_pass(number)
                count = 0
                for batch in batches():
                    current["input"] = torch.from_numpy(batch)
                    model(current["input"])
                    count += len(batch)
                    done += 1
                    if progress:
                        progress("calibrate", done, total_batches * collector.passes)
                if count == 0:
                    raise UserError("qat: no calibration images were read; check --data")
    finally:
        for q in qs.values():
            q.observer = None
    amax = collector.amax(percentile)
    for name in sees_input:
        amax[name] = collector.stats[name].absmax
    for name, q in qs.items():
        q.set_amax(amax[name])
    return amax


def export_qdq_onnx(model: nn.Module, preprocess: Any, path: Path, opset: int = DEFAULT_OPSET,
                    extra_metadata: dict[str, str] | None = None) -> Any:
    """Legacy-exporter Q/DQ ONNX (dynamic batch) with int8 weight initializers; returns the ONNX model."""
    import warnings

    import onnx

    from edgeresnet.compress import qdq
    from edgeresnet.export.onnx_meta import BatchProfile, contract_props, load_onnx_model, set_metadata

    check_opset(opset)
    profile = BatchProfile.parse(QAT_BATCH_PROFILE_TEXT)
    m = copy.deepcopy(model).eval()
    fold_batchnorms(m)
    for module in m.modules():
        if isinstance(module, (QuantConv2d, QuantLinear)) and module.quant_enabled:
            module.weight_scale_frozen = weight_scale(module.weight)
    dummy = torch.zeros(1, 3, preprocess.image_size, preprocess.image_size)
    with tempfile.TemporaryDirectory(prefix="edgeresnet-qat-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(m, (dummy,), str(raw), **torchscript_kwargs(), opset_version=opset, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=True)
        onnx_model = load_onnx_model(raw, weights=True)
    qdq.fold_weight_quantize(onnx_model)
    qdq.name_nodes(onnx_model)
    set_metadata(onnx_model, contract_props(preprocess, profile, extra_metadata))
    onnx_model.producer_name = "edgeresnet"
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, str(path))
    return onnx_model


def export_float_onnx(model: nn.Module, preprocess: Any, path: Path, opset: int = 17) -> None:
    """The FP32 reference for accuracy comparisons, exported the same (legacy) way."""
    import warnings

    dummy = torch.zeros(1, 3, preprocess.image_size, preprocess.image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(copy.deepcopy(model).eval(), (dummy,), str(path), **torchscript_kwargs(), opset_version=opset,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def torch_logits(model: nn.Module, images: np.ndarray, chunk: int = 128) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(images[i:i + chunk])) for i in range(0, len(images), chunk)]).numpy()


def fine_tune(model: nn.Module, splits: Any, data_spec: str, options: QatOptions, spec: Any = None
              ) -> tuple[nn.Module, dict[str, Any]]:
    """A few low-LR epochs with the shared training loop (``train.fit``): no warm-up, cosine decay, the data
    set's usual augmentation; activation ranges stay fixed, weight scales follow the weights."""
    from edgeresnet.train import TrainRecipe, fit

    changes: dict[str, Any] = {"epochs": options.epochs, "lr": options.lr, "warmup_epochs": 0.0, "seed": options.seed,
                               "image_size": int(splits.preprocess.image_size), "data": data_spec,
                               "max_steps": options.max_steps}
    if options.batch_size:
        changes["batch_size"] = options.batch_size
    recipe = TrainRecipe(**changes)
    result = fit(model, splits, recipe, None, progress=options.progress, spec=spec)
    tuned = result.model if result.model is not None else model
    return tuned, {"best_val_acc": result.best_val_acc, "history": result.history,
                   "recipe": {k: recipe.to_dict()[k] for k in ("epochs", "lr", "optimizer", "schedule", "batch_size",
                                                               "weight_decay", "max_steps")}}


def _fine_tune_keeping_the_better(qmodel: nn.Module, data: Any, data_spec: str, options: QatOptions, spec: Any,
                                  val: tuple[np.ndarray, np.ndarray], calibrated_val: float
                                  ) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune (with epochs); the calibrated model is "epoch 0" of it, so whichever is better on val is kept,
    as ``fit`` keeps its best epoch."""
    tuning: dict[str, Any] = {"epochs": options.epochs, "lr": options.lr, "val_top1_before": round(calibrated_val, 3)}
    if options.epochs > 0:
        calibrated_state = {k: v.clone() for k, v in qmodel.state_dict().items()}
        qmodel, info = fine_tune(qmodel, data, data_spec, options, spec)
        tuning.update(info)
        tuned_val = top1(torch_logits(qmodel, val[0]), val[1])
        tuning["val_top1_after"] = round(tuned_val, 3)
        if tuned_val < calibrated_val:
            qmodel.load_state_dict(calibrated_state)
            tuning["kept"] = "calibrated weights (fine-tuning lowered val top-1)"
        else:
            tuning["kept"] = "fine-tuned weights"
    return qmodel.eval(), tuning


@dataclass
class QatOptions:
    epochs: int = 2
    lr: float = 1e-3
    batch_size: int | None = None
    calib_images: int | None = None
    method: str = "percentile"
    percentile: float = cal.DEFAULT_PERCENTILE
    opset: int = DEFAULT_OPSET
    max_drop: float = 1.0
    max_keep: int | None = None
    seed: int = 0
    bench_iterations: int = 30
    eval_images: int | None = None
    progress: bool = True
    max_steps: int | None = None  # cap on optimizer steps (smoke runs)


@dataclass
class QatReport(Int8Report):
    JSON_KEYS: ClassVar[tuple[str, ...]] = ("out", "written", "accuracy", "gate", "fine_tune", "calibration",
                                            "structure", "latency", "warnings")
    fine_tune: dict[str, Any]

    def json_value(self, key: str) -> Any:
        if key == "fine_tune":  # the per-epoch val top-1, not the whole training history
            return {**{k: v for k, v in self.fine_tune.items() if k != "history"},
                    "val_acc_per_epoch": [round(h.get("val_acc", 0.0), 3) for h in (self.fine_tune.get("history") or [])]}
        return super().json_value(key)


def run_qat(checkpoint_path: Path, out: Path, data_spec: str, options: QatOptions,
            progress: Progress | None = None, command: str = "qat") -> QatReport:
    """Calibrate, fine-tune, export Q/DQ ONNX, gate on val with ONNX Runtime, report test too, write + manifest."""
    import dataclasses

    import onnx

    from edgeresnet.artifacts import atomic_output, build_manifest, check_output_dir, write_manifest
    from edgeresnet.compress import qdq
    from edgeresnet.data import Preprocess, load_data
    from edgeresnet.models import load_checkpoint, model_from_checkpoint

    check_output_dir(out)
    cal.check_method(options.method)
    if options.epochs < 0:
        raise UserError(f"--epochs {options.epochs}: must be 0 or more")
    if not 0 < options.lr < 1:
        raise UserError(f"--lr {options.lr}: must be in (0, 1); QAT fine-tunes at a low rate such as 1e-3")
    check_opset(options.opset)
    checkpoint = load_checkpoint(checkpoint_path)
    if is_qat_state(checkpoint["state_dict"]):
        raise UserError(f"MODEL {checkpoint_path}: already quantized (fake-quant state); pass the FP32 checkpoint")
    model, spec = model_from_checkpoint(checkpoint, checkpoint_path)
    preprocess = Preprocess.from_dict(checkpoint["preprocess"])
    data = load_data(data_spec, preprocess.image_size, seed=options.seed)
    if data.num_classes != spec.num_classes:
        raise UserError(f"--data {data_spec}: {data.num_classes} classes, the checkpoint has {spec.num_classes}; "
                        "pass the data set the model was trained on")
    data = dataclasses.replace(data, preprocess=preprocess)
    calib = cal.calibration_from_data(data_spec, data.splits["train"], options.calib_images)
    warnings = list(calib.warnings)
    source = BatchSource(calib, preprocess, 32, digits_loader=(lambda: data) if data_spec in BUILTIN_SOURCES else None)

    qmodel = quantize_model(model)
    calibrate_model(qmodel, lambda: iter(source), options.method, options.percentile, progress, source.batches())
    held_out = eval_splits(data, options.eval_images)
    calibrated_val = top1(torch_logits(qmodel, held_out["val"][0]), held_out["val"][1])
    qmodel, tuning = _fine_tune_keeping_the_better(qmodel, data, data_spec, options, spec, held_out["val"],
                                                   calibrated_val)

    with tempfile.TemporaryDirectory(prefix="edgeresnet-qat-") as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        export_float_onnx(model, preprocess, fp32_path)
        fp32_session = ort_session(fp32_path)
        fp32_logits = {s: run_logits(fp32_session, x) for s, (x, _) in held_out.items()}

        def confirm(keep: frozenset) -> np.ndarray:
            set_float_units(qmodel, keep)
            path = Path(tmp) / "candidate.onnx"
            export_qdq_onnx(qmodel, preprocess, path, options.opset)
            return run_logits(ort_session(path, emulate=True), held_out["val"][0])

        def sweep(keep: frozenset) -> np.ndarray:
            set_float_units(qmodel, keep)
            return torch_logits(qmodel, held_out["val"][0])

        gate = run_gate(units(qmodel), sweep, fp32_logits["val"], held_out["val"][1], options.max_drop,
                        options.max_keep, confirm=confirm, progress=progress)
        set_float_units(qmodel, gate.kept_float)
        final = Path(tmp) / "qat.onnx"
        onnx_model = export_qdq_onnx(qmodel, preprocess, final, options.opset, {
            "edgeresnet.quantization": json.dumps({"flavour": "trt", "method": options.method, "qat": True,
                                                   "kept_in_float": gate.kept_float})})
        int8_session = ort_session(final)
        accuracy = measure_accuracy(final, fp32_logits, held_out, None, emulate=True)
        accuracy["calibrated_val_top1_torch"] = round(calibrated_val, 3)
        accuracy["test_ort_cpu_int8_kernels"] = fused_kernels_top1(int8_session, held_out, None)
        latency = int8_speedup(fp32_session, int8_session, (1, 3, preprocess.image_size, preprocess.image_size),
                               options.bench_iterations)
        structure = qdq.describe_qdq(onnx_model)
        summary = {"quantize_linear": structure["quantize_linear"], "dequantize_linear": structure["dequantize_linear"],
                   "weighted_layers": len(structure["weighted"]),
                   "weighted_inputs_quantized": sum(w["input_quantized"] for w in structure["weighted"]),
                   "residual_adds_quantized": sum(any(a["inputs_quantized"]) for a in structure["adds"]),
                   "symmetric": structure["symmetric"], "opset": options.opset}
        report = QatReport(out, gate, accuracy, latency, calib.describe(), summary, fine_tune=tuning,
                           warnings=warnings)
        if not gate.passed:
            return report
        with atomic_output(out) as tmp_out:
            onnx.save(onnx_model, str(tmp_out))
    settings = {"method": options.method, "percentile": options.percentile if options.method == "percentile" else None,
                "epochs": options.epochs, "lr": options.lr, "opset": options.opset, "max_drop": options.max_drop,
                "max_keep": options.max_keep, "data": data_spec, "seed": options.seed, "flavour": "trt"}
    manifest = build_manifest("onnx-int8", out, command=command, inputs={"checkpoint": checkpoint_path},
                              settings=settings, extra={
        "preprocess": preprocess.to_dict(), "precision": "int8", "model": spec.to_dict(),
        "quantization": {"flavour": "trt", "for_runtime": "tensorrt", "method": options.method, "qat": True,
                         "calibration": calib.describe(),
                         "kept_in_float": gate.kept_float, "structure": summary, "accuracy": accuracy,
                         "gate": gate.to_dict(), "fine_tune": report.to_dict()["fine_tune"],
                         "latency_ort_cpu": latency},
    })
    write_manifest(out, manifest)
    report.written = True
    return report
