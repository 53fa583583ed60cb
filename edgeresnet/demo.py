"""``edgeresnet demo`` (what ``make demo`` runs): the main job end to end on the embedded digits, or with
``--data fashion-mnist`` (or a directory of IDX files) on that data set with its 28 px recipe.

The demo is an ordered list of named stages; each stage reads what earlier stages produced from
``ctx.results`` and returns its own numbers and output paths. A new step of the tool is one more ``Stage`` in
``STAGES`` (``run_demo(stages=...)`` runs another list).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError

TARGET_TOP1 = {"digits": 95.0, "idx": 92.5}  # from-scratch ResNet18 on the test split: digits; IDX sets (Fashion-MNIST)


@dataclass
class DemoContext:
    out: Path
    data: str = "digits"
    fast: bool = False
    epochs: int | None = None
    progress: bool = True
    console: Any = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage name -> its result

    def stage_dir(self, name: str) -> Path:
        path = self.out / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def say(self, message: str) -> None:
        if self.console is not None:
            self.console.print(message, highlight=False)


@dataclass
class StageResult:
    headline: str  # one line for the summary table, e.g. "test top-1 97.8 %"
    numbers: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    run: Callable[[DemoContext], StageResult]


def demo_recipe(fast: bool, epochs: int | None = None, data: str = "digits") -> Any:
    """The training defaults (ResNet18, digits, 32 px) or, for any other data, the 28 px IDX recipe; ``fast``
    keeps 2 optimizer steps (uncompiled) for smoke tests."""
    from edgeresnet.train.recipe import IDX_RECIPE, TrainRecipe

    base = {} if data == "digits" else {**IDX_RECIPE, "data": data}
    if fast:
        return TrainRecipe(**{**base, "epochs": epochs or 1, "max_steps": 2, "batch_size": 32, "compile": False})
    return TrainRecipe(**{**base, "epochs": epochs}) if epochs else TrainRecipe(**base)


def target_top1(data: str) -> float:
    return TARGET_TOP1["digits" if data == "digits" else "idx"]


def _train(ctx: DemoContext) -> StageResult:
    from edgeresnet.train.job import run_training

    recipe = demo_recipe(ctx.fast, ctx.epochs, ctx.data)
    run = run_training(recipe, ctx.stage_dir("train"), overwrite=True, progress=ctx.progress, console=ctx.console)
    result = run.result
    assert result.checkpoint is not None
    numbers = {"best_val_acc": result.best_val_acc, "best_epoch": result.best_epoch, "epochs": len(result.history),
               "steps": result.steps, "checkpoint": str(result.checkpoint)}
    epochs = len(result.history)
    return StageResult(f"ResNet18 {recipe.image_size} px on {ctx.data}, {epochs} epoch{'s' if epochs != 1 else ''}: val top-1 "
                       f"{result.best_val_acc:.2f} %", numbers, dict(result.outputs))


def _evaluate(ctx: DemoContext) -> StageResult:
    from edgeresnet.evaluate import evaluate_model_file, write_evaluation

    checkpoint = Path(ctx.results["train"]["numbers"]["checkpoint"])
    metrics = evaluate_model_file(checkpoint, ctx.data, "test", limit=64 if ctx.fast else None)
    outputs = write_evaluation(metrics, ctx.stage_dir("evaluate"))
    numbers = {k: metrics[k] for k in ("top1", "top5", "n", "loss")}
    numbers["macro_f1"] = metrics["macro"]["f1"]
    numbers["target_top1"] = target_top1(ctx.data)
    numbers["meets_target"] = metrics["top1"] >= target_top1(ctx.data)
    return StageResult(f"test top-1 {metrics['top1']:.2f} %, top-5 {metrics['top5']:.2f} %, macro F1 "
                       f"{metrics['macro']['f1']:.3f} ({metrics['n']} images)", numbers, outputs)


def _best_checkpoint(ctx: DemoContext) -> Path:
    return Path(ctx.results["train"]["numbers"]["checkpoint"])


def _export(ctx: DemoContext) -> StageResult:
    from edgeresnet.export import export_stage

    summary = export_stage(_best_checkpoint(ctx), ctx.stage_dir("export"), dynamic_batch=(1, 8, 32), opset=17,
                           data=ctx.data, name="resnet18.onnx")
    parity = summary.get("parity") or {}
    worst = parity.get("max_abs", 0.0)
    return StageResult(f"ONNX opset {summary['opset']} ({summary['exporter']}), dynamic batch 1:8:32, parity "
                       f"max-abs {worst:.1e}", {"onnx": summary["path"], "parity": parity},
                       {"onnx": summary["path"]})


def _run_cli(ctx: DemoContext, args: list[str]) -> None:
    """Run one ``edgeresnet`` command in a child process, for crash isolation only: a TensorRT-RTX builder that
    aborts (a C++ abort or segfault is not a Python exception) then ends that child, not the demo."""
    import subprocess
    import sys

    ctx.say("[dim]$ edgeresnet " + " ".join(args) + "[/dim]")
    done = subprocess.run([sys.executable, "-m", "edgeresnet", *args], capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"demo: 'edgeresnet {args[0]}' failed ({tail})", exit_code=done.returncode or 1)


def _quiet() -> Any:
    """The stages' own lines (plans, tables) stay out of the demo's output, as they did in a child process."""
    from rich.console import Console

    return Console(quiet=True)


def _build(ctx: DemoContext) -> StageResult:
    from edgeresnet.trt.build import build
    from edgeresnet.trt.rtx import import_rtx

    onnx_path = ctx.results["export"]["numbers"]["onnx"]
    out_jetson = ctx.stage_dir("build") / "agx-orin"
    out_jetson.mkdir(exist_ok=True)
    ctx.say(f"[dim]build {onnx_path} for agx-orin (fp16, batch 1): trtexec script + deploy configs, dry run[/dim]")
    build(onnx=onnx_path, target="agx-orin", precision="fp16", batch="1", emit_trtexec=True, deploy_configs=True,
          dry_run=True, out=out_jetson, console=_quiet())
    outputs = {"agx-orin trtexec script": str(out_jetson)}
    numbers: dict[str, Any] = {"jetson_script_dir": str(out_jetson)}
    headline = "trtexec script for agx-orin"
    if import_rtx() is not None:
        out_desktop = ctx.stage_dir("build") / "desktop-ada"
        out_desktop.mkdir(exist_ok=True)
        # real TensorRT-RTX builds stay in a child process (_run_cli): crash isolation
        _run_cli(ctx, ["build", onnx_path, "--target", "desktop-ada", "--builder", "rtx", "--batch", "1:8:32",
                       "--out", str(out_desktop), "--json", str(out_desktop / "build.json")])
        qdq = ctx.results.get("quantize", {}).get("outputs", {}).get("int8 trt")
        if qdq:
            _run_cli(ctx, ["build", qdq, "--target", "desktop-ada", "--builder", "rtx", "--precision", "int8",
                           "--batch", "1:8:32", "--out", str(out_desktop)])
        engines = sorted(out_desktop.glob("*.engine"))
        numbers["engines"] = [str(e) for e in engines]
        numbers["engine_bytes"] = {e.name: e.stat().st_size for e in engines}
        outputs["desktop-ada engine (TensorRT-RTX)"] = str(out_desktop)
        headline += f"; {len(engines)} real engine(s) built by TensorRT-RTX for desktop-ada"
    else:
        headline += "; TensorRT-RTX not installed (pip install 'edgeresnet[rtx]'): no engine built"
    return StageResult(headline, numbers, outputs)


def _benchmark(ctx: DemoContext) -> StageResult:
    from edgeresnet.bench.rundir import benchmark_run_dir

    run = benchmark_run_dir(ctx.out, data=ctx.data, batches=(1,) if ctx.fast else (1, 8), duration_s=0.2 if ctx.fast else 1.0)
    rows = run["document"]["results"]
    return StageResult(f"{len(rows)} benchmark results; HTML report written",
                       {"results": str(run["results"]), "skipped": run.get("skipped", [])},
                       {"results": str(run["results"]), "report": str(run["report"])})


def _json_of(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _prune(ctx: DemoContext) -> StageResult:
    """Prune to half the FLOPs, fine-tune with KD from the unpruned model, export the pruned model."""
    from edgeresnet.artifacts import write_json_atomic
    from edgeresnet.compress.pipeline import FinetuneOptions, run_prune
    from edgeresnet.compress.prune import PruneSettings
    from edgeresnet.export import export_stage

    out = ctx.stage_dir("compress")
    pruned = out / "resnet18-pruned.pt"
    report = out / "prune.json"
    options = FinetuneOptions(epochs=0, bn_images=64, progress=ctx.progress) if ctx.fast else \
        FinetuneOptions(epochs=3, progress=ctx.progress)
    ctx.say(f"[dim]prune {_best_checkpoint(ctx)} to half the FLOPs, {options.epochs} fine-tune epoch(s)[/dim]")
    write_json_atomic(report, run_prune(_best_checkpoint(ctx), pruned, PruneSettings(flops=0.5), options.validate(),
                                        teacher=None, data=ctx.data))
    numbers = _json_of(report)  # the numbers as the JSON report holds them
    summary = export_stage(pruned, out, dynamic_batch=(1, 8, 32), opset=17, data=ctx.data,
                           name="resnet18-pruned.onnx")
    tuned = "no fine-tune in --fast" if ctx.fast else "KD fine-tune from the unpruned model"
    return StageResult(f"{prune_headline(numbers)} ({tuned}); exported with parity", {"prune": numbers},
                       {"checkpoint": str(pruned), "onnx": summary["path"], "report": str(report)})


def prune_headline(report: dict[str, Any]) -> str:
    """``pruned to 50.0 % of the MACs, 48.4 % of the params: test top-1 99.26 % vs 99.63 % (-0.37 pt)``."""
    macs, params, acc = report.get("macs") or {}, report.get("params") or {}, report.get("accuracy") or {}
    text = "pruned"
    if "kept" in macs and "kept" in params:
        text += f" to {100 * macs['kept']:.1f} % of the MACs, {100 * params['kept']:.1f} % of the params"
    if acc.get("after") is not None and acc.get("before") is not None:
        text += f": test top-1 {acc['after']:.2f} % vs {acc['before']:.2f} % unpruned ({acc['after'] - acc['before']:+.2f} pt)"
    return text


def int8_headline(reports: dict[str, dict[str, Any]]) -> str:
    """``INT8 test top-1 vs FP32 99.63 %: PTQ trt 99.63 % (+0.00 pt), ...`` from each command's JSON report."""
    parts, fp32 = [], None
    for label, report in reports.items():
        test = ((report.get("accuracy") or {}).get("test")) or {}
        if test.get("int8_top1") is None:
            continue
        fp32 = test.get("fp32_top1", fp32)
        parts.append(f"{label} {test['int8_top1']:.2f} % ({test['int8_top1'] - test.get('fp32_top1', 0.0):+.2f} pt)")
    if not parts:
        return "INT8 by PTQ and QAT"
    head = f"INT8 test top-1 vs FP32 {fp32:.2f} %: " if fp32 is not None else "INT8 test top-1: "
    return head + ", ".join(parts) + "; each passed the --max-drop gate"


def _quantize(ctx: DemoContext) -> StageResult:
    """INT8 by post-training calibration (TensorRT and ONNX Runtime flavours) and by QAT, each accuracy-gated."""
    from edgeresnet.artifacts import write_json_atomic
    from edgeresnet.compress.int8_accuracy import gate_failure
    from edgeresnet.compress.ptq_stage import calibrate, qat

    out = ctx.stage_dir("compress")
    onnx_path = ctx.results["export"]["numbers"]["onnx"]
    images = {"images": 64, "eval_images": 64} if ctx.fast else {}
    outputs: dict[str, str] = {}
    numbers: dict[str, Any] = {}
    for flavour in ("trt", "ort"):
        target = out / f"resnet18-int8-{flavour}.onnx"
        ctx.say(f"[dim]calibrate {onnx_path} ({flavour} flavour, entropy) -> {target}[/dim]")
        report = calibrate(model=onnx_path, out=target, flavour=flavour, method="entropy", data=ctx.data,
                           **images).report
        path = write_json_atomic(out / f"calibrate-{flavour}.json", report.to_dict())
        if not report.gate.passed:
            raise gate_failure(report)
        outputs[f"int8 {flavour}"] = str(target)
        numbers[f"calibrate_{flavour}"] = _json_of(path)
    qat_out = out / "resnet18-qat.onnx"
    budget = {"epochs": 0, "calib_images": 64, "eval_images": 64} if ctx.fast else {"epochs": 2}
    ctx.say(f"[dim]qat {_best_checkpoint(ctx)} ({budget['epochs']} epoch(s)) -> {qat_out}[/dim]")
    qat_report = qat(model=_best_checkpoint(ctx), out=qat_out, data=ctx.data, **budget)
    path = write_json_atomic(out / "qat.json", qat_report.to_dict())
    if not qat_report.gate.passed:
        raise gate_failure(qat_report)
    outputs["int8 qat"] = str(qat_out)
    numbers["qat"] = _json_of(path)
    headline = int8_headline({"PTQ TensorRT": numbers["calibrate_trt"], "PTQ ONNX Runtime": numbers["calibrate_ort"],
                              "QAT": numbers["qat"]})
    return StageResult(headline, numbers, outputs)


STAGES: list[Stage] = [
    Stage("train", "train ResNet18 from scratch", _train),
    Stage("evaluate", "evaluate the best checkpoint on the test split", _evaluate),
    Stage("export", "export ONNX (dynamic batch) and prove parity with PyTorch", _export),
    Stage("prune", "structured pruning to half the FLOPs, KD fine-tune, export", _prune),
    Stage("quantize", "INT8: PTQ calibration (TensorRT and ONNX Runtime flavours) and QAT", _quantize),
    Stage("build", "TensorRT: trtexec script for AGX Orin, real engine via TensorRT-RTX", _build),
    Stage("benchmark", "benchmark every artifact and write the HTML report", _benchmark),
]


def run_demo(out: Path, *, data: str = "digits", fast: bool = False, epochs: int | None = None, progress: bool = True,
             console: Any = None, stages: list[Stage] | None = None) -> dict[str, Any]:
    """Run every stage in order, print where the outputs are and a summary table; returns the JSON report."""
    from rich.console import Console

    console = console or Console()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; pass a directory for the demo's outputs")
    from edgeresnet.train.job import make_out_dir

    make_out_dir(out)
    ctx = DemoContext(out=out, data=data, fast=fast, epochs=epochs, progress=progress, console=console)
    report: dict[str, Any] = {"out": str(out), "data": data, "fast": fast, "stages": []}
    started = time.perf_counter()
    for number, stage in enumerate(stages or STAGES, start=1):
        console.rule(f"stage {number}: {stage.name} - {stage.title}")
        t0 = time.perf_counter()
        result = stage.run(ctx)
        seconds = time.perf_counter() - t0
        entry = {"name": stage.name, "title": stage.title, "seconds": round(seconds, 2), "headline": result.headline,
                 "numbers": result.numbers, "outputs": result.outputs}
        ctx.results[stage.name] = entry
        report["stages"].append(entry)
        console.print(f"[green]done[/green] {stage.name} in {seconds:.1f} s: {result.headline}", highlight=False)
    report["seconds"] = round(time.perf_counter() - started, 2)
    console.print(summary_table(report))
    evaluation = ctx.results.get("evaluate", {}).get("numbers", {})
    if not fast and evaluation and not evaluation.get("meets_target"):
        console.print(f"[yellow]note:[/yellow] test top-1 {evaluation['top1']:.2f} % is below the "
                      f"{target_top1(data):g} % target", highlight=False)
    console.print(f"all outputs are in {out}/", highlight=False)
    return report


def summary_table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    out = Path(report["out"])
    table = Table(title=f"demo summary ({report['seconds']:.1f} s{', fast' if report['fast'] else ''}); "
                        f"outputs under {out}/")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("result", overflow="fold")
    table.add_column("outputs", overflow="fold")
    for entry in report["stages"]:
        table.add_row(entry["name"], f"{entry['seconds']:.1f}", entry["headline"],
                      "\n".join(_relative(path, out) for path in entry["outputs"].values()))
    return table


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
