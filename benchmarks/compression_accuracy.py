"""The compression accuracy figures on digits: what each compression costs, measured on the artifact it writes.

    python benchmarks/compression_accuracy.py [--baseline CKPT] [--epochs 12] [--finetune-epochs 4]
                                              [--workdir runs/compression] [--only ROW,ROW]
                                              [--json benchmarks/data/compression_accuracy.json]

Rows run in order and share one ``Context`` (data, the FP32 baseline, artifacts of earlier rows):

  fp32                the baseline: ResNet-18 trained on digits with the training recipe's defaults (32 px),
                      or ``--baseline CKPT``
  prune50             structured pruning to about half the FLOPs (``edgeresnet prune --flops 0.5``), BatchNorm
                      statistics re-estimated on 512 training images, no fine-tune
  prune50_kd          the same + ``--finetune-epochs`` with KD from the unpruned model (the issue's claim:
                      loses <= 1.0 pt top-1)
  prune50_ce          the same fine-tune budget with cross-entropy only (what KD adds)
  [quantization rows] QAT / PTQ INT8 rows are added below the marked line with ``@row(...)``; they can start
                      from ``ctx.artifacts["fp32"]`` or ``ctx.artifacts["prune50_kd"]``.

Every row reports top-1 on the test split, the drop against FP32 in points, the claim it is checked
against, parameters and MACs. One run, one machine; the load on the machine is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RowFn = Callable[["Context"], dict[str, Any]]
ROWS: list[tuple[str, str, RowFn]] = []


def row(name: str, description: str) -> Callable[[RowFn], RowFn]:
    """Register a row; rows run in registration order."""
    def wrap(fn: RowFn) -> RowFn:
        ROWS.append((name, description, fn))
        return fn
    return wrap


@dataclass
class Context:
    args: argparse.Namespace
    workdir: Path
    splits: Any = None
    test: tuple[Any, Any] = ()
    preprocess: Any = None
    spec: Any = None
    model: Any = None  # the FP32 baseline
    fp32_top1: float = 0.0
    artifacts: dict[str, Path] = field(default_factory=dict)  # row name -> file it wrote
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


def _costs(model: Any, image_size: int) -> dict[str, Any]:
    from edgeresnet.compress.flops import count_costs

    c = count_costs(model, image_size)
    return {"params": c.params, "gmacs": round(c.gmacs, 5)}


# -- rows: FP32 and pruning (prune/distill helper) --------------------------------------------------------------
@row("fp32", "ResNet-18 FP32 baseline (torch)")
def fp32_row(ctx: Context) -> dict[str, Any]:
    from edgeresnet.compress.measure import accuracy
    from edgeresnet.compress.pipeline import load_source, load_splits
    from edgeresnet.models import ModelSpec, build_model
    from edgeresnet.train import TrainRecipe, fit

    path = Path(ctx.args.baseline) if ctx.args.baseline else ctx.workdir / "baseline" / "best.pt"
    if not path.exists():
        from edgeresnet.data import load_data

        recipe = TrainRecipe(epochs=ctx.args.epochs, seed=ctx.args.seed)
        splits = load_data(recipe.data, recipe.image_size, seed=recipe.split_seed)
        spec = ModelSpec(recipe.arch, splits.num_classes, recipe.small_stem, recipe.dropout)
        print(f"training the baseline: {recipe.epochs} epochs, {recipe.arch} at {recipe.image_size}px")
        fit(build_model(spec), splits, recipe, path.parent, progress=not ctx.args.quiet, spec=spec)
    _ckpt, ctx.model, ctx.spec, ctx.preprocess = load_source(path)
    ctx.splits = load_splits("digits", ctx.preprocess, 0)
    ctx.test = ctx.splits.arrays("test")
    ctx.fp32_top1 = accuracy(ctx.model, *ctx.test)
    ctx.artifacts["fp32"] = path
    return {"artifact": str(path), "backend": "torch", "top1": ctx.fp32_top1, "claim": None,
            **_costs(ctx.model, ctx.preprocess.image_size)}


def _prune_row(ctx: Context, name: str, epochs: int, teacher: str | None) -> dict[str, Any]:
    from edgeresnet.compress.pipeline import FinetuneOptions, run_prune
    from edgeresnet.compress.prune import PruneSettings

    out = ctx.workdir / f"{name}.pt"
    options = FinetuneOptions(epochs=epochs, seed=ctx.args.seed, progress=not ctx.args.quiet)
    report = run_prune(ctx.artifacts["fp32"], out, PruneSettings(flops=ctx.args.flops), options, teacher=teacher,
                       data="digits", exporter="torchscript")
    ctx.artifacts[name] = out
    return {"artifact": str(out), "backend": "torch", "top1": report["accuracy"]["after"],
            "params": report["params"]["after"], "gmacs": round(report["macs"]["after"] / 1e9, 5),
            "flops_kept": report["macs"]["kept"], "params_kept": report["params"]["kept"],
            "onnx_bytes": report["onnx_bytes"], "finetune_epochs": epochs,
            "top1_as_cut": report["accuracy"]["pruned_raw"],
            "top1_bn_reestimated": report["accuracy"]["pruned_no_finetune"],
            "teacher": report["teacher"], "ratio_used": report["ratio_used"]}


@row("prune50", "pruned to ~50% FLOPs, BatchNorm re-estimated (512 train images), no fine-tune")
def prune50_row(ctx: Context) -> dict[str, Any]:
    return {**_prune_row(ctx, "prune50", 0, "none"), "claim": None}


@row("prune50_kd", "pruned to ~50% FLOPs + KD fine-tune from the unpruned model")
def prune50_kd_row(ctx: Context) -> dict[str, Any]:
    return {**_prune_row(ctx, "prune50_kd", ctx.args.finetune_epochs, None), "claim": 1.0}


@row("prune50_ce", "pruned to ~50% FLOPs + the same fine-tune, cross-entropy only")
def prune50_ce_row(ctx: Context) -> dict[str, Any]:
    return {**_prune_row(ctx, "prune50_ce", ctx.args.finetune_epochs, "none"), "claim": None}


# -- rows: quantization (QAT / PTQ helper adds its rows below this line with @row) ----------------------------

def _fp32_onnx(ctx: Context, name: str, checkpoint: Path) -> Path:
    """The FP32 ONNX ``edgeresnet export`` writes (static batch 1, metadata + manifest linking the checkpoint)."""
    from edgeresnet.export import export_checkpoint

    out = ctx.workdir / f"{name}.fp32.onnx"
    if not out.exists():
        export_checkpoint(checkpoint, out, exporter="torchscript", opset=17, data="digits")
    return out


def _ptq_row(ctx: Context, name: str, checkpoint: Path, flavour: str, method: str) -> dict[str, Any]:
    """``edgeresnet calibrate`` on the checkpoint's FP32 ONNX: 500 train images, --max-drop 1.0, gate on val."""
    from edgeresnet.compress import calibration as cal
    from edgeresnet.compress import ptq
    from edgeresnet.compress.flops import count_costs
    from edgeresnet.models import load_checkpoint, model_from_checkpoint

    source = _fp32_onnx(ctx, name, checkpoint)
    out = ctx.workdir / f"{name}.onnx"
    calib = cal.calibration_from_data("digits", ctx.splits.splits["train"], None)
    options = ptq.PtqOptions(method=method, flavour=flavour, flavour_reason="benchmark", max_drop=1.0,
                             data_spec="digits", bench_iterations=20)
    report = ptq.quantize_onnx(source, out, calib, ctx.splits, options)
    model, _ = model_from_checkpoint(load_checkpoint(checkpoint), checkpoint)
    costs = count_costs(model, ctx.preprocess.image_size)
    ctx.artifacts[name] = out
    test = report.accuracy["test"]
    return {"artifact": str(out), "backend": "ort", "top1": test["int8_top1"], "claim": 1.0,
            "params": costs.params, "gmacs": round(costs.gmacs, 5), "flavour": flavour, "method": method,
            "onnx_fp32_top1": test["fp32_top1"], "drop_vs_onnx_fp32": test["drop"],
            "val": report.accuracy["val"], "gate_passed": report.gate.passed, "kept_in_float": report.gate.kept_float,
            "measured_on": report.accuracy["measured_on"],
            "test_ort_cpu_int8_kernels": report.accuracy.get("test_ort_cpu_int8_kernels"),
            "latency_ort_cpu": report.latency, "onnx_bytes": out.stat().st_size if out.exists() else None}


@row("ptq_int8_trt", "PTQ INT8, TensorRT flavour (entropy, 500 images), ONNX Runtime")
def ptq_trt_row(ctx: Context) -> dict[str, Any]:
    return _ptq_row(ctx, "ptq_int8_trt", ctx.artifacts["fp32"], "trt", "entropy")


@row("ptq_int8_ort", "PTQ INT8, ONNX Runtime flavour (u8 act., entropy, 500 images)")
def ptq_ort_row(ctx: Context) -> dict[str, Any]:
    return _ptq_row(ctx, "ptq_int8_ort", ctx.artifacts["fp32"], "ort", "entropy")


@row("qat_int8", "QAT INT8 (TensorRT Q/DQ), 2 epochs at lr 1e-3, ONNX Runtime")
def qat_row(ctx: Context) -> dict[str, Any]:
    from edgeresnet.compress import qat

    out = ctx.workdir / "qat_int8.onnx"
    options = qat.QatOptions(epochs=2, lr=1e-3, method="percentile", max_drop=1.0, seed=ctx.args.seed,
                             bench_iterations=20, progress=not ctx.args.quiet)
    report = qat.run_qat(ctx.artifacts["fp32"], out, "digits", options)
    ctx.artifacts["qat_int8"] = out
    test = report.accuracy["test"]
    return {"artifact": str(out), "backend": "ort", "top1": test["int8_top1"], "claim": 1.0,
            **_costs(ctx.model, ctx.preprocess.image_size), "onnx_fp32_top1": test["fp32_top1"],
            "drop_vs_onnx_fp32": test["drop"], "val": report.accuracy["val"], "gate_passed": report.gate.passed,
            "kept_in_float": report.gate.kept_float, "val_before_finetune_torch": report.fine_tune.get("val_top1_before"),
            "test_ort_cpu_int8_kernels": report.accuracy.get("test_ort_cpu_int8_kernels"),
            "latency_ort_cpu": report.latency, "onnx_bytes": out.stat().st_size if out.exists() else None}


@row("prune50_kd_int8_ort", "pruned ~50% FLOPs + KD, then PTQ INT8 (ONNX Runtime flavour)")
def prune_int8_row(ctx: Context) -> dict[str, Any]:
    pruned = ctx.artifacts.get("prune50_kd", ctx.workdir / "prune50_kd.pt")
    if not Path(pruned).exists():
        raise SystemExit("prune50_kd_int8_ort needs the prune50_kd row (run it in the same run or before)")
    result = _ptq_row(ctx, "prune50_kd_int8_ort", Path(pruned), "ort", "entropy")
    return {**result, "claim": None}



# -- driver -----------------------------------------------------------------------------------------------------
def machine_state() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpus": os.cpu_count(), "loadavg_1_5_15": [round(x, 2) for x in load] if load else None}


def markdown(results: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [f"# Compression accuracy on digits ({meta['test_images']} test images, {meta['image_size']}px)", "",
             f"Machine: {meta['machine']['cpus']} CPUs, load average {meta['machine']['loadavg_start']} at start, "
             f"{meta['machine']['loadavg_end']} at end; wall time {meta['wall_s']:.0f} s.", "",
             "| row | what | backend | params (M) | GMACs | top-1 % | drop (pt) | claim | verdict |",
             "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for name, r in results.items():
        claim = "-" if r.get("claim") is None else f"<= {r['claim']:.1f}"
        verdict = "-" if r.get("claim") is None else ("pass" if r["drop"] <= r["claim"] else "FAIL")
        params = f"{r['params'] / 1e6:.3f}" if r.get("params") is not None else "-"
        gmacs = f"{r['gmacs']:.4f}" if r.get("gmacs") is not None else "-"
        lines.append(f"| {name} | {r['description']} | {r.get('backend', '-')} | {params} | {gmacs} | "
                     f"{r['top1']:.2f} | {r['drop']:+.2f} | {claim} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="FP32 checkpoint to start from (default: train one)")
    parser.add_argument("--epochs", type=int, default=12, help="baseline training epochs (when training)")
    parser.add_argument("--finetune-epochs", type=int, default=4, help="fine-tune budget of the pruned models")
    parser.add_argument("--flops", type=float, default=0.5, help="fraction of FLOPs the pruned model keeps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="runs/compression", help="checkpoints and ONNX go here (git-ignored)")
    parser.add_argument("--only", help="comma-separated row names (fp32 always runs)")
    parser.add_argument("--json", default="benchmarks/data/compression_accuracy.json",
                        help="results JSON; a .md table is written beside it")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a shared box)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = Context(args, workdir)
    wanted = set(args.only.split(",")) | {"fp32"} if args.only else None
    load_start = machine_state()
    started = time.perf_counter()
    for name, description, fn in ROWS:
        if wanted is not None and name not in wanted:
            continue
        t0 = time.perf_counter()
        result = fn(ctx)
        result.update({"description": description, "drop": round(ctx.fp32_top1 - result["top1"], 3),
                       "top1": round(result["top1"], 3), "seconds": round(time.perf_counter() - t0, 1)})
        ctx.results[name] = result
        print(f"{name:>12}: top-1 {result['top1']:.2f} %  drop {result['drop']:+.2f} pt  ({result['seconds']:.0f} s)",
              flush=True)
    meta = {"test_images": int(len(ctx.test[1])), "image_size": ctx.preprocess.image_size,
            "arch": ctx.spec.arch, "seed": args.seed, "finetune_epochs": args.finetune_epochs, "flops": args.flops,
            "machine": {"cpus": load_start["cpus"], "loadavg_start": load_start["loadavg_1_5_15"],
                        "loadavg_end": machine_state()["loadavg_1_5_15"], "torch_threads": args.threads},
            "wall_s": round(time.perf_counter() - started, 1), "command": " ".join(sys.argv)}
    doc = {"benchmark": "compression_accuracy", "meta": meta, "rows": ctx.results}
    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    md = markdown(ctx.results, meta)
    json_path.with_suffix(".md").write_text(md)
    print(md)
    failed = [n for n, r in ctx.results.items() if r.get("claim") is not None and r["drop"] > r["claim"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
