"""``edgeresnet prune --sweep``: prune at several ratios with the same fine-tune budget, measure each (top-1 with
McNemar's test against the unpruned model, MACs, ONNX size, interleaved ONNX Runtime latency), and write the
Pareto table and plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeresnet.compress.pipeline import (
    FinetuneOptions,
    Say,
    load_source,
    load_splits,
    load_teacher,
    prune_once,
    quiet,
    resolve_data,
    save_checkpoint,
)
from edgeresnet.errors import UserError


def parse_levels(text: str) -> list[float]:
    """``--sweep``'s comma-separated ratios, sorted and without repeats."""
    try:
        levels = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise UserError(f"--sweep {text}: expected comma-separated ratios, e.g. 0.2,0.3,0.4,0.5,0.6") from exc
    if not levels:
        raise UserError(f"--sweep {text!r}: no ratios given, e.g. 0.2,0.3,0.4,0.5,0.6")
    bad = [x for x in levels if not 0.0 < x < 1.0]
    if bad:
        raise UserError(f"--sweep {text}: ratio {bad[0]} is outside (0, 1); each is the fraction of channels removed")
    return sorted(set(levels))


def pareto_flags(rows: list[dict[str, Any]]) -> list[bool]:
    """A row is Pareto-optimal when no other row is at least as accurate, as fast and as cheap, and better in one."""
    flags = []
    for row in rows:
        dominated = False
        for other in rows:
            if other is row:
                continue
            ge = (other["top1"] >= row["top1"] and other["latency_ms"] <= row["latency_ms"]
                  and other["gmacs"] <= row["gmacs"])
            gt = (other["top1"] > row["top1"] or other["latency_ms"] < row["latency_ms"]
                  or other["gmacs"] < row["gmacs"])
            if ge and gt:
                dominated = True
                break
        flags.append(not dominated)
    return flags


def run_sweep(source: Path, out_dir: Path, levels: list[float], base: dict[str, Any], options: FinetuneOptions, *,
              teacher: str | None, data: str | None, say: Say = quiet, latency_rounds: int = 3,
              latency_duration_s: float = 1.0, latency_threads: int | None = None,
              exporter: str | None = None) -> dict[str, Any]:
    """Prune at each ratio, fine-tune each with the same budget, measure, and write the Pareto table + plot."""
    import tempfile

    from edgeresnet.artifacts import build_manifest, sha256_file, write_json_atomic, write_manifest, write_text_atomic
    from edgeresnet.compress.flops import count_costs
    from edgeresnet.compress.measure import accuracy_outcomes, export_onnx_file, ort_latencies
    from edgeresnet.compress.prune import PruneSettings
    from edgeresnet.evaluate.intervals import wilson_interval
    from edgeresnet.evaluate.paired import compare_outcomes

    PruneSettings(ratio=levels[0], **base)  # validate the shared knobs before any work
    if latency_rounds < 1 or latency_duration_s <= 0:
        raise UserError("--latency-rounds must be >= 1 and --latency-duration > 0")
    if latency_threads is not None and latency_threads < 1:
        raise UserError(f"--latency-threads {latency_threads}: must be at least 1")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: with --sweep, --out is a directory; {out_dir} is a file")
    from edgeresnet.artifacts import check_output_folder, make_output_dir

    check_output_folder(out_dir)  # created (with its parents) once the sweep has its data
    _ckpt, model, spec, preprocess = load_source(source)
    teacher_model, teacher_path = load_teacher(teacher, model, spec.num_classes, image_size=preprocess.image_size)
    data_spec = resolve_data(data, source, preprocess)
    splits = load_splits(data_spec, preprocess, options.seed)
    test = splits.arrays("test")
    make_output_dir(out_dir)
    base_costs = count_costs(model, preprocess.image_size)
    base_top1, base_correct = accuracy_outcomes(model, *test)
    rows: list[dict[str, Any]] = [{"ratio": 0.0, "file": str(source), "top1": round(base_top1, 3),
                                   "top1_no_finetune": None, "top1_raw": None, "params": base_costs.params,
                                   "gmacs": round(base_costs.gmacs, 4), "flops_kept": 1.0}]
    models = [model]
    outcomes = [base_correct]  # per-image test outcomes of each row's model, for McNemar's test against row 0
    for ratio in levels:
        say(f"ratio {ratio:.2f}: pruning and fine-tuning ({options.epochs} epochs)")
        settings = PruneSettings(ratio=ratio, **base)
        run = prune_once(model, spec, preprocess, splits, settings, teacher_model, options, test=test, say=say,
                         onnx=False)
        report = run["report"]
        path = out_dir / f"pruned_r{ratio:.2f}.pt"
        report["accuracy"]["before"] = rows[0]["top1"]
        save_checkpoint(run["model"], spec, preprocess, path, command="prune --sweep", source=source,
                        teacher=teacher_path, settings={**settings.to_dict(), "data": data_spec,
                                                        "bn_images": options.bn_images,
                                                        "finetune_epochs": options.epochs, "seed": options.seed},
                        extra={"pruning": {k: v for k, v in report.items() if k != "finetune_history"}})
        rows.append({"ratio": ratio, "file": str(path), "top1": report["accuracy"]["after"],
                     "top1_no_finetune": report["accuracy"]["pruned_no_finetune"],
                     "top1_raw": report["accuracy"]["pruned_raw"], "params": report["params"]["after"],
                     "gmacs": round(report["macs"]["after"] / 1e9, 4), "flops_kept": report["macs"]["kept"]})
        models.append(run["model"])
        outcomes.append(run["correct"])
    say(f"measuring ONNX Runtime latency of {len(models)} models (interleaved, {latency_rounds} rounds)")
    with tempfile.TemporaryDirectory(prefix="edgeresnet-sweep-") as tmp:
        paths = [export_onnx_file(m, preprocess, Path(tmp) / f"m{i}.onnx", exporter) for i, m in enumerate(models)]
        sizes = [p.stat().st_size for p in paths]
        lat = ort_latencies(paths, preprocess.image_size, rounds=latency_rounds, duration_s=latency_duration_s,
                            threads=latency_threads)
    for row, size, latency in zip(rows, sizes, lat):
        row["onnx_bytes"] = size
        row["latency_ms"] = round(latency.median_ms, 4)
        row["latency_p90_ms"] = round(latency.p90_ms, 4)
        row["speedup"] = round(lat[0].median_ms / latency.median_ms, 3)
        row["drop"] = round(rows[0]["top1"] - row["top1"], 3)
    for row, correct in zip(rows, outcomes):
        row["top1_ci95"] = wilson_interval(int(correct.sum()), int(correct.size)).percent()
        if row is not rows[0]:
            paired = compare_outcomes(outcomes[0], correct)
            row.update({"drop_ci95": paired.to_dict()["drop_ci95"], "p_value": paired.p_value,
                        "significant": paired.significant})
    for row, flag in zip(rows, pareto_flags(rows)):
        row["pareto"] = flag
    report = {"source": str(source), "source_sha256": sha256_file(source), "data": data_spec,
              "test_images": int(len(test[1])), "image_size": preprocess.image_size,
              "settings": {**base, "bn_images": options.bn_images, "finetune_epochs": options.epochs,
                           "teacher": teacher_path or
                           ("none" if teacher_model is None else "source (unpruned)"),
                           "temperature": options.temperature, "alpha": options.alpha, "seed": options.seed},
              "latency": {"backend": "onnxruntime-cpu", "batch": 1, "rounds": latency_rounds,
                          "duration_s_per_round": latency_duration_s, "statistic": "median",
                          "intra_op_threads": latency_threads, "loadavg": _loadavg()},
              "rows": rows}
    report["files"] = {"json": str(out_dir / "sweep.json"), "table": str(out_dir / "sweep.md"),
                       "plot": str(out_dir / "sweep.png")}
    write_json_atomic(out_dir / "sweep.json", report)
    write_text_atomic(out_dir / "sweep.md", pareto_markdown(report))
    plot_sweep(report, out_dir / "sweep.png")
    for name, kind in (("sweep.json", "prune-sweep"), ("sweep.md", "prune-sweep-table"),
                       ("sweep.png", "prune-sweep-plot")):
        write_manifest(out_dir / name, build_manifest(
            kind, out_dir / name, command="prune --sweep", inputs={"source": source},
            settings={**report["settings"], "levels": levels, "data": data_spec},
            extra={"rows": [{k: v for k, v in r.items()} for r in rows]}))
    return report


def _loadavg() -> list[float] | None:
    """The machine's load when latency was measured: a busy shared box inflates and scatters timings."""
    import os

    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def pareto_markdown(report: dict[str, Any]) -> str:
    from edgeresnet.evaluate.intervals import format_accuracy

    lines = [f"# Pruning sweep: {Path(report['source']).name} on {report['data']} "
             f"({report['test_images']} test images, {report['image_size']}px)", "",
             f"Fine-tune: {report['settings']['finetune_epochs']} epochs each after BatchNorm re-estimation on "
             f"{report['settings']['bn_images']} training images, teacher {report['settings']['teacher']}; "
             f"latency: ONNX Runtime CPU, batch 1, median over {report['latency']['rounds']} interleaved rounds "
             f"(load average {report['latency']['loadavg']}).", "",
             "| ratio | params (M) | GMACs | FLOPs kept | ONNX (MB) | top-1 % [95 % CI] | drop (pt) | "
             "McNemar p (significant at 5 %) | as cut % | BN re-est. % | latency ms | speed-up | Pareto |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in report["rows"]:
        noft = "-" if r["top1_no_finetune"] is None else f"{r['top1_no_finetune']:.2f}"
        raw = "-" if r.get("top1_raw") is None else f"{r['top1_raw']:.2f}"
        test = "-" if r.get("p_value") is None else f"{r['p_value']:.3g} ({'yes' if r['significant'] else 'no'})"
        lines.append(f"| {r['ratio']:.2f} | {r['params'] / 1e6:.3f} | {r['gmacs']:.4f} | {r['flops_kept']:.3f} | "
                     f"{r['onnx_bytes'] / 1e6:.2f} | {format_accuracy(r['top1'], r.get('top1_ci95'), 2)} | "
                     f"{r['drop']:+.2f} | {test} | {raw} | {noft} | "
                     f"{r['latency_ms']:.3f} | x{r['speedup']:.2f} | {'yes' if r['pareto'] else ''} |")
    return "\n".join(lines) + "\n"


def plot_sweep(report: dict[str, Any], path: Path) -> None:
    """Top-1 against GMACs and against measured latency; the Pareto front joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeresnet.artifacts import atomic_output

    rows = report["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "gmacs", "GMACs"), (axes[1], "latency_ms", "ONNX Runtime latency (ms, batch 1)")):
        ax.scatter([r[key] for r in rows], [r["top1"] for r in rows], c=["tab:red" if r["ratio"] == 0 else "tab:blue"
                                                                        for r in rows])
        front = sorted((r for r in rows if r["pareto"]), key=lambda r: r[key])
        ax.plot([r[key] for r in front], [r["top1"] for r in front], "--", color="gray", linewidth=1)
        for r in rows:
            ax.annotate("orig" if r["ratio"] == 0 else f"{r['ratio']:.2f}", (r[key], r["top1"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 % (test)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Pruning sweep: {Path(report['source']).name}, {report['settings']['finetune_epochs']} fine-tune "
                 f"epochs each")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
