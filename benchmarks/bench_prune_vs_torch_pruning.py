"""Our pruner vs Torch-Pruning's magnitude pruner at the same FLOPs and the same fine-tune budget.

    pip install -c constraints.txt torch-pruning==1.6.1      # benchmark-only dependency
    python benchmarks/bench_prune_vs_torch_pruning.py [--baseline CKPT] [--flops 0.5] [--finetune-epochs 4]

Both start from the same trained ResNet-18 (digits, 32 px; the one ``compression_accuracy.py`` trains, or
``--baseline``), are pruned to the same FLOPs (Torch-Pruning: its ``pruning_ratio`` bisected to at most
``--flops``; ours: ``--flops`` set to exactly the fraction Torch-Pruning reached), and are fine-tuned
identically (BatchNorm statistics re-estimated on 512 training images, then the same epochs, LR, seed, and
KD from the unpruned model). Reported: test top-1 on digits, params and MACs, and ONNX Runtime
CPU latency at 224 px (the same fully-convolutional networks exported at 224), measured in interleaved
rounds, as ratios from one run. The machine's load is recorded: timings on a shared box are noisy.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def ensure_baseline(path: Path, epochs: int, seed: int) -> Path:
    """Train the recipe-default ResNet-18 on digits when no baseline exists yet."""
    if path.exists():
        return path
    from edgeresnet.data import load_data
    from edgeresnet.models import ModelSpec, build_model
    from edgeresnet.train import TrainRecipe, fit

    recipe = TrainRecipe(epochs=epochs, seed=seed)
    splits = load_data(recipe.data, recipe.image_size, seed=recipe.split_seed)
    spec = ModelSpec(recipe.arch, splits.num_classes, recipe.small_stem, recipe.dropout)
    print(f"training the baseline: {epochs} epochs")
    fit(build_model(spec), splits, recipe, path.parent, spec=spec)
    return path


def torch_pruning_to_macs(model: Any, image_size: int, target_macs: int, round_to: int) -> tuple[Any, float]:
    """Torch-Pruning's magnitude pruner (group L2, mean reduction; fc ignored), ratio bisected to the MACs."""
    import torch
    import torch_pruning as tp

    from edgeresnet.compress.flops import count_costs

    example = torch.zeros(1, 3, image_size, image_size)

    def prune(ratio: float) -> Any:
        m = copy.deepcopy(model).eval()
        pruner = tp.pruner.MagnitudePruner(m, example, importance=tp.importance.MagnitudeImportance(p=2),
                                           pruning_ratio=ratio, ignored_layers=[m.fc], round_to=round_to)
        pruner.step()
        return m

    lo, hi = 0.0, 0.95
    best = None
    for _ in range(12):
        mid = (lo + hi) / 2
        m = prune(mid)
        macs = count_costs(m, image_size).macs
        if macs <= target_macs:
            hi, best = mid, (m, mid)
        else:
            lo = mid
    assert best is not None, "Torch-Pruning could not reach the target MACs"
    return best


def widths(model: Any) -> dict[str, int]:
    import torch.nn as nn

    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="runs/compression/baseline/best.pt")
    parser.add_argument("--epochs", type=int, default=12, help="baseline training epochs, if it must be trained")
    parser.add_argument("--flops", type=float, default=0.5)
    parser.add_argument("--finetune-epochs", type=int, default=4)
    parser.add_argument("--latency-size", type=int, default=224)
    parser.add_argument("--latency-rounds", type=int, default=5)
    parser.add_argument("--latency-duration", type=float, default=2.0, help="seconds per model per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for fine-tuning")
    parser.add_argument("--ort-threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: ORT's)")
    parser.add_argument("--json", default="benchmarks/data/prune_vs_torch_pruning.json")
    args = parser.parse_args(argv)

    import importlib.util
    from importlib.metadata import version

    import torch

    if importlib.util.find_spec("torch_pruning") is None:
        raise SystemExit("needs Torch-Pruning: pip install -c constraints.txt torch-pruning==1.6.1")
    from edgeresnet.compress.flops import count_costs
    from edgeresnet.compress.measure import accuracy, export_onnx_file, ort_latencies
    from edgeresnet.compress.pipeline import FinetuneOptions, finetune_pruned, load_source, load_splits
    from edgeresnet.compress.prune import PruneSettings, prune_model, recalibrate_batchnorm

    tp_version = version("torch-pruning")  # the package's own __version__ still says 1.6.0 in the 1.6.1 wheel
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    started = time.perf_counter()
    path = ensure_baseline(Path(args.baseline), args.epochs, args.seed)
    _ckpt, model, spec, preprocess = load_source(path)
    splits = load_splits("digits", preprocess, 0)
    test = splits.arrays("test")
    size = preprocess.image_size
    base_cost = count_costs(model, size)

    # Torch-Pruning's uniform ratio moves in coarse steps: bisect it to at most the target, then give ours
    # exactly the FLOPs Torch-Pruning reached (ours can hit a fraction closely), so ours is never the larger.
    t0 = time.perf_counter()
    theirs, tp_ratio = torch_pruning_to_macs(model, size, int(args.flops * base_cost.macs), round_to=8)
    tp_search_s = time.perf_counter() - t0
    tp_macs = count_costs(theirs, size).macs
    t0 = time.perf_counter()
    ours = prune_model(model, PruneSettings(flops=tp_macs / base_cost.macs), size)
    ours_prune_s = time.perf_counter() - t0

    options = FinetuneOptions(epochs=args.finetune_epochs, seed=args.seed)
    rows: dict[str, dict[str, Any]] = {"original": {"model": model}}
    bn_images = splits.arrays("train", limit=512)[0]
    for name, pruned in (("ours", ours.model), ("torch_pruning", theirs)):
        acc_raw = accuracy(pruned, *test)
        recalibrate_batchnorm(pruned, bn_images)  # the same BatchNorm re-estimation for both
        acc_pruned = accuracy(pruned, *test)
        print(f"{name}: fine-tuning {args.finetune_epochs} epochs with KD from the unpruned model", flush=True)
        t0 = time.perf_counter()
        tuned, _info = finetune_pruned(copy.deepcopy(pruned), splits, model, options, spec)
        tuned = getattr(tuned, "student", tuned).eval()
        rows[name] = {"model": tuned, "top1_as_cut": round(acc_raw, 3), "top1_no_finetune": round(acc_pruned, 3),
                      "finetune_s": round(time.perf_counter() - t0, 1)}
    for row in rows.values():
        m = row["model"]
        cost, cost224 = count_costs(m, size), count_costs(m, args.latency_size)
        row.update({"top1": round(accuracy(m, *test), 3), "params": cost.params, "gmacs": round(cost.gmacs, 5),
                    f"gmacs_at_{args.latency_size}": round(cost224.gmacs, 4), "widths": widths(m)})

    print(f"ONNX Runtime latency at {args.latency_size}px, {args.latency_rounds} interleaved rounds", flush=True)
    with tempfile.TemporaryDirectory(prefix="edgeresnet-tp-") as tmp:
        pre224 = preprocess.with_size(args.latency_size)
        paths = [export_onnx_file(rows[n]["model"], pre224, Path(tmp) / f"{n}.onnx", "torchscript") for n in rows]
        sizes = [p.stat().st_size for p in paths]
        lats = ort_latencies(paths, args.latency_size, rounds=args.latency_rounds, duration_s=args.latency_duration,
                             threads=args.ort_threads)
    for row, size_b, lat in zip(rows.values(), sizes, lats):
        row.update({"onnx_bytes": size_b, "latency_ms": lat.to_dict()})
        row.pop("model")
    base_lat = rows["original"]["latency_ms"]["median_ms"]
    for row in rows.values():
        row["speedup_vs_original"] = round(base_lat / row["latency_ms"]["median_ms"], 3)
        row["drop_pt"] = round(rows["original"]["top1"] - row["top1"], 3)
    ratios = {
        "top1_ours_minus_tp_pt": round(rows["ours"]["top1"] - rows["torch_pruning"]["top1"], 3),
        "latency_ours_over_tp": round(rows["ours"]["latency_ms"]["median_ms"]
                                      / rows["torch_pruning"]["latency_ms"]["median_ms"], 3),
        "macs_ours_over_tp": round(rows["ours"]["gmacs"] / rows["torch_pruning"]["gmacs"], 4),
        "params_ours_over_tp": round(rows["ours"]["params"] / rows["torch_pruning"]["params"], 4),
    }
    doc = {"benchmark": "prune_vs_torch_pruning", "torch_pruning": tp_version,
           "setup": {"baseline": str(path), "arch": spec.arch, "train_image_size": size, "flops_target": args.flops,
                     "ours_settings": ours.plan.settings.to_dict(), "ours_ratio_used": ours.plan.ratio,
                     "tp_pruning_ratio": round(tp_ratio, 4),
                     "tp_settings": "MagnitudePruner, MagnitudeImportance(p=2, group_reduction='mean', "
                                    "normalizer='mean'), round_to=8, ignored_layers=[fc], global_pruning=False",
                     "finetune": f"BatchNorm re-estimated on 512 train images, then {args.finetune_epochs} epochs, "
                                 "KD from the unpruned model (T=4, alpha=0.7), "
                                 f"LR 0.01 cosine, seed {args.seed}, identical for both",
                     "latency": f"ONNX Runtime CPU, batch 1, {args.latency_size}px, median of {args.latency_rounds} "
                                f"interleaved rounds x {args.latency_duration}s, intra-op threads "
                                f"{args.ort_threads or 'ORT default'}", "test_images": int(len(test[1])),
                     "prune_seconds": {"ours": round(ours_prune_s, 2), "tp_search_12_prunes": round(tp_search_s, 2)}},
           "machine": {"cpus": os.cpu_count(), "loadavg_start": [round(x, 2) for x in load_start],
                       "loadavg_end": [round(x, 2) for x in os.getloadavg()], "torch_threads": args.threads},
           "rows": rows, "ratios": ratios, "wall_s": round(time.perf_counter() - started, 1),
           "original_macs_at_train_size": base_cost.macs}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"| model | params (M) | GMACs@{size} | GMACs@{args.latency_size} | top-1 % as cut | "
             f"top-1 % BN re-est. | top-1 % fine-tuned | ORT ms @{args.latency_size} | speed-up |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        noft, raw = row.get("top1_no_finetune"), row.get("top1_as_cut")
        lines.append(f"| {name} | {row['params'] / 1e6:.3f} | {row['gmacs']:.4f} | "
                     f"{row[f'gmacs_at_{args.latency_size}']:.3f} | {'-' if raw is None else f'{raw:.2f}'} | "
                     f"{'-' if noft is None else f'{noft:.2f}'} | "
                     f"{row['top1']:.2f} | {row['latency_ms']['median_ms']:.2f} | x{row['speedup_vs_original']:.2f} |")
    table = "\n".join(lines)
    out.with_suffix(".md").write_text(f"# Ours vs Torch-Pruning {tp_version} at {args.flops:.0%} FLOPs\n\n"
                                      f"{table}\n\nratios: {json.dumps(ratios)}\n\n"
                                      f"machine: {json.dumps(doc['machine'])}\n")
    print(table)
    print("ratios:", json.dumps(ratios))
    print("machine:", json.dumps(doc["machine"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
