"""Ensembles of our checkpoints: average | weighted | vote, as ONE module and ONE ONNX graph.

``EnsembleModule`` runs every member on the same input and combines them inside the graph, so the
exported ONNX has one input ``input`` and one output ``logits`` and goes through build, benchmark and
evaluate like any single model. The output is the log of the combined class distribution (log-softmax
values), so argmax, top-5 and cross-entropy computed from it mean what they mean for one model:

* ``average``: log(mean_m softmax(z_m)), soft voting;
* ``weighted``: log(sum_m w_m softmax(z_m)), weights normalised to sum 1;
* ``vote``: (weighted) majority of the members' top-1, ties broken by the averaged probabilities,
  reported as the normalised vote share.

Our checkpoint format holds one ResNet, so the ensemble's artifact is its ONNX file, whose manifest lists
the members (path and sha256), the method and the weights.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeresnet.errors import UserError

METHODS = ("average", "weighted", "vote")
_CONTRACT_FIELDS = ("image_size", "resize", "mean", "std", "channel_order", "layout", "scale", "interpolation",
                    "class_names")


# -- pure checks ----------------------------------------------------------------------------------------


def parse_weights(text: str | Sequence[float] | None, count: int, method: str) -> tuple[float, ...] | None:
    """``"0.5,0.3,0.2"`` -> normalised weights; ``None`` when the method takes none or none were given."""
    if method not in METHODS:
        raise UserError(f"--method {method}: choose one of {', '.join(METHODS)}")
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if method == "average":
        raise UserError("--weights: --method average weighs every model equally; use --method weighted (or vote)")
    if isinstance(text, str):
        try:
            values = [float(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise UserError(f"--weights {text}: expected comma-separated numbers, e.g. 0.5,0.3,0.2") from None
    else:
        values = [float(v) for v in text]
    if len(values) != count:
        raise UserError(f"--weights: {len(values)} weight(s) for {count} models; give one weight per model, in order")
    if any(not math.isfinite(v) or v <= 0 for v in values):
        raise UserError(f"--weights {','.join(f'{v:g}' for v in values)}: every weight must be a positive number "
                        "(leave a model out instead of giving it 0)")
    total = sum(values)
    return tuple(v / total for v in values)


def check_members(names: Sequence[str], num_classes: Sequence[int], preprocess: Sequence[dict[str, Any]]) -> None:
    """Refuse, in one line, members that do not answer the same question on the same input."""
    if len(names) < 2:
        raise UserError(f"ensemble: {len(names)} model(s) given; an ensemble needs at least 2")
    first = names[0]
    for name, k, pre in zip(names[1:], num_classes[1:], preprocess[1:]):
        if k != num_classes[0]:
            raise UserError(f"ensemble: {name} has {k} classes but {first} has {num_classes[0]}; "
                            "ensemble only models trained on the same classes")
        differing = [f for f in _CONTRACT_FIELDS if _norm(pre.get(f)) != _norm(preprocess[0].get(f))]
        if differing:
            raise UserError(f"ensemble: {name} and {first} differ in preprocessing ({', '.join(differing)}); "
                            "ensemble only models that take the same input")


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value)
    if isinstance(value, float):
        return round(value, 9)
    return value


# -- the module -----------------------------------------------------------------------------------------


class EnsembleModule(nn.Module):
    """Members run on one shared input; their class distributions are combined inside the graph."""

    def __init__(self, members: Sequence[nn.Module], method: str = "average",
                 weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if method not in METHODS:
            raise UserError(f"--method {method}: choose one of {', '.join(METHODS)}")
        if len(members) < 2:
            raise UserError(f"ensemble: {len(members)} model(s) given; an ensemble needs at least 2")
        if method == "weighted" and weights is None:
            raise UserError("--method weighted: give --weights (one per model) or let the command derive them")
        w = torch.full((len(members),), 1.0 / len(members)) if weights is None else torch.tensor(list(weights))
        if w.numel() != len(members) or bool((w <= 0).any()):
            raise UserError(f"--weights: need {len(members)} positive weights, got {list(w.tolist())}")
        w = w / w.sum()
        self.members = nn.ModuleList(members)
        self.method = method
        self.register_buffer("weights", w.to(torch.float32))
        self.register_buffer("log_weights", torch.log(w).to(torch.float32))
        # half the smallest vote: the probability tie-break can never overturn a difference of one vote
        self.tie_break = float(w.min()) * 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([torch.log_softmax(m(x), dim=1) for m in self.members])  # (M, N, K)
        if self.method in ("average", "weighted"):
            return torch.logsumexp(log_probs + self.log_weights.view(-1, 1, 1), dim=0)
        probs = (log_probs.exp() * self.weights.view(-1, 1, 1)).sum(dim=0)
        top = (log_probs == log_probs.amax(dim=2, keepdim=True)).to(log_probs.dtype)
        votes = (top * self.weights.view(-1, 1, 1)).sum(dim=0)
        score = votes + self.tie_break * probs
        return torch.log((score / score.sum(dim=1, keepdim=True)).clamp_min(1e-12))


# -- members from files ---------------------------------------------------------------------------------


@dataclass
class Member:
    path: Path
    sha256: str
    spec: Any
    preprocess: Any  # Preprocess
    model: Any
    manifest: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "model": self.spec.to_dict()}


def load_members(paths: Sequence[str | os.PathLike[str]]) -> list[Member]:
    """Our checkpoints, checked to share class count and preprocessing (ONNX/engines cannot be merged)."""
    from edgeresnet.artifacts import read_manifest, require_file, sha256_file
    from edgeresnet.data.presets import Preprocess
    from edgeresnet.models import load_checkpoint, model_from_checkpoint

    if len(paths) < 2:
        raise UserError(f"ensemble: {len(paths)} model(s) given; an ensemble needs at least 2")
    checkpoints = []
    for raw in paths:
        path = require_file(raw, "checkpoint")
        if path.suffix.lower() not in (".pt", ".pth"):
            raise UserError(f"{path}: ensemble members must be edgeresnet checkpoints (.pt); an ONNX file or engine "
                            "cannot be merged into one graph")
        checkpoints.append((path, load_checkpoint(path)))
    check_members([str(p) for p, _ in checkpoints], [int(c["model"]["num_classes"]) for _, c in checkpoints],
                  [Preprocess.from_dict(c["preprocess"]).to_dict() for _, c in checkpoints])
    members = []
    for path, ckpt in checkpoints:
        model, spec = model_from_checkpoint(ckpt, path)
        try:
            manifest = read_manifest(path) or {}
        except UserError:
            manifest = {}
        members.append(Member(path, sha256_file(path), spec, Preprocess.from_dict(ckpt["preprocess"]), model, manifest))
    return members


def recorded_data(members: Sequence[Member]) -> tuple[str | None, int | None, list[str]]:
    """(data set, split seed, notes) recorded in the members' manifests; notes flag members that disagree."""
    datas = [(m.manifest.get("settings") or {}).get("data") for m in members]
    seeds = [(m.manifest.get("settings") or {}).get("split_seed") for m in members]
    notes = []
    if len({d for d in datas if d}) > 1:
        notes.append(f"members were trained on different data sets ({', '.join(sorted({d for d in datas if d}))})")
    if len({s for s in seeds if s is not None}) > 1:
        notes.append("members were trained on different split seeds: one member's test images may be another's "
                     "training images, so the test accuracy may be optimistic")
    data = next((d for d in datas if d), None)
    seed = next((s for s in seeds if s is not None), None)
    return data, (int(seed) if seed is not None else None), notes


def duplicate_notes(members: Sequence[Member]) -> list[str]:
    seen: dict[str, Path] = {}
    notes = []
    for m in members:
        if m.sha256 in seen:
            notes.append(f"{m.path} is the same file as {seen[m.sha256]} (sha256 {m.sha256[:12]}); it counts twice")
        seen.setdefault(m.sha256, m.path)
    return notes


def build_ensemble(members: Sequence[Member], method: str, weights: Sequence[float] | None) -> EnsembleModule:
    return EnsembleModule([m.model for m in members], method, weights).eval()


def export_ensemble(module: EnsembleModule, members: Sequence[Member], out: str | os.PathLike[str], *,
                    method: str, weights: Sequence[float] | None, weights_from: str | None, data: str,
                    parity_images: Any, opset: int | None = None, batch: Any = 1, exporter: str | None = None,
                    target: Any = None, tolerance: Any = None, stage: Any = None, advance: Any = None) -> Any:
    """Export through ``export_onnx`` (checked, parity-proven), then list the members in the manifest."""
    from edgeresnet.artifacts import write_manifest
    from edgeresnet.export import export_onnx

    preprocess = members[0].preprocess
    description = {"method": method, "weights": list(module.weights.tolist()), "weights_from": weights_from,
                   "members": [m.describe() for m in members]}
    result = export_onnx(module, preprocess, out, opset=opset, batch=batch, exporter=exporter, target=target,
                         parity_images=parity_images, tolerance=tolerance, stage=stage, advance=advance,
                         settings={"data": data, "ensemble_method": method, "parity_images": int(len(parity_images))})
    manifest = dict(result.manifest)
    manifest["inputs"] = {f"member{i}": {"path": str(m.path), "sha256": m.sha256} for i, m in enumerate(members, 1)}
    manifest["ensemble"] = description
    write_manifest(result.path, manifest)
    result.manifest = manifest
    return result


# -- the stage --------------------------------------------------------------------------------------


@dataclass
class EnsembleSettings:
    """What ``edgeresnet ensemble`` takes, one field per option (same defaults)."""

    models: list[Path]
    method: str = "average"
    weights: str | None = None
    out: Path | None = None
    data: str | None = None
    split: str = "test"
    split_seed: int | None = None
    limit: int | None = None
    batch_size: int = 64
    device: str | None = None
    opset: int | None = None
    exporter: str = "auto"
    batch: int | None = None
    dynamic_batch: str | None = None
    target: str | None = None
    parity_images: int = 32

    def __post_init__(self) -> None:
        self.models = [Path(m) for m in self.models]
        self.out = Path(self.out) if self.out is not None else None

    def check(self) -> EnsembleSettings:
        """Bad options fail before any model is loaded."""
        if self.batch_size < 1:
            raise UserError(f"--batch-size {self.batch_size}: must be a positive integer")
        if self.split not in ("train", "val", "test"):
            raise UserError(f"--split {self.split}: choose train, val or test")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit {self.limit}: must be a positive number of images")
        if self.batch is not None and self.dynamic_batch is not None:
            raise UserError("--batch and --dynamic-batch: give one of them (static or dynamic batch)")
        parse_weights(self.weights, len(self.models), self.method)  # bad method/weights: fail before loading
        if self.out is not None:
            if self.out.suffix.lower() != ".onnx":
                raise UserError(f"--out {self.out}: the ensemble is written as ONNX; use a file name ending in .onnx")
            from edgeresnet.artifacts import check_output_dir

            check_output_dir(self.out)
        return self


@dataclass
class EnsembleReport:
    """Members' and the ensemble's metrics on one split (and the export, with ``out``); ``document`` is the JSON."""

    document: dict[str, Any]

    @property
    def ensemble(self) -> dict[str, Any]:
        return self.document["ensemble"]

    @property
    def members(self) -> list[dict[str, Any]]:
        return self.document["members"]

    @property
    def notes(self) -> list[str]:
        return self.document["notes"]

    @property
    def export(self) -> dict[str, Any] | None:
        return self.document.get("export")

    def to_dict(self) -> dict[str, Any]:
        return self.document


def evaluate_ensemble(settings: EnsembleSettings | None = None, *, console: Any = None, progress: bool = False,
                      **options: Any) -> EnsembleReport:
    """Evaluate an ensemble of checkpoints (and each member), optionally export it as one ONNX model.

    Takes an ``EnsembleSettings`` or its fields as keywords; ``progress`` shows bars on ``console``.
    """
    if settings is not None and options:
        raise TypeError("evaluate_ensemble() takes an EnsembleSettings or keyword options, not both")
    from edgeresnet.experiments.common import quiet_console

    s = (settings if settings is not None else EnsembleSettings(**options)).check()
    profile = s.dynamic_batch if s.dynamic_batch is not None else (s.batch or 1)
    return EnsembleReport(run_ensemble(
        s.models, s.method, s.weights, out=s.out, data=s.data, split=s.split, split_seed=s.split_seed, limit=s.limit,
        batch_size=s.batch_size, device=s.device, opset=s.opset, exporter=s.exporter, profile=profile,
        target=s.target, parity_images=s.parity_images, console=quiet_console(console), progress=progress))


def run_ensemble(models: list[Path], method: str, weights_text: str | None, *, out: Path | None, data: str | None,
                 split: str, split_seed: int | None, limit: int | None, batch_size: int, device: str | None,
                 opset: int | None, exporter: str, profile: Any, target: str | None, parity_images: int, console: Any,
                 progress: bool) -> dict[str, Any]:
    """Members and ensemble evaluated through runners on one split; ``out`` exports and evaluates the ONNX."""
    from edgeresnet.data import load_data
    from edgeresnet.evaluate import evaluate_runner
    from edgeresnet.experiments.common import progress_bar
    from edgeresnet.runners import load_runner
    from edgeresnet.runners.torch_runner import TorchRunner

    members = load_members(models)
    weights = parse_weights(weights_text, len(members), method)
    recorded, recorded_seed, notes = recorded_data(members)
    if method == "vote":
        notes.append("a vote's output is the share of (weighted) votes per class: its cross-entropy is not comparable "
                     "with that of probabilities")
    notes += duplicate_notes(members)
    data = data or recorded or "digits"
    seed = split_seed if split_seed is not None else (recorded_seed or 0)
    preprocess = members[0].preprocess
    target_obj = None
    if target is not None:
        from edgeresnet.export import resolve_target

        target_obj = resolve_target(target)
    splits = load_data(data, preprocess.image_size, seed=seed)
    if preprocess.class_names and tuple(splits.class_names) != tuple(preprocess.class_names):
        raise UserError(f"--data {data}: classes {list(splits.class_names)[:6]} do not match the models' "
                        f"{list(preprocess.class_names)[:6]}; evaluate on the data set the models were trained on")
    splits.preprocess = preprocess
    names = list(splits.class_names)

    def headline(metrics: dict[str, Any]) -> dict[str, Any]:
        return {"top1": metrics["top1"], "top5": metrics["top5"], "macro_f1": metrics["macro"]["f1"],
                "loss": metrics["loss"], "n": metrics["n"]}

    with progress_bar(console, progress) as bar:
        weights_from = "--weights" if weights is not None else None
        if method == "weighted" and weights is None:  # weigh by validation accuracy: never by the split we report
            val_images, val_labels = splits.arrays("val")
            task = bar.add_task("weights from val top-1", total=len(members), stats="")
            accs = []
            for member in members:
                accs.append(evaluate_runner(_member_runner(member, device), val_images, val_labels, batch_size,
                                            names)["top1"])
                bar.advance(task)
            if min(accs) <= 0:
                raise UserError("--method weighted: a model has 0 % validation top-1; pass --weights or drop it")
            weights = parse_weights(accs, len(members), method)
            weights_from = "validation top-1 of each model"
        images, labels = splits.arrays(split, limit=limit)
        if not len(labels):
            raise UserError(f"--data {data}: the {split} split is empty; nothing to evaluate")
        member_reports = []
        for member in members:
            task = bar.add_task(str(member.path), total=len(labels), stats="")
            metrics = evaluate_runner(_member_runner(member, device), images, labels, batch_size, names,
                                      on_batch=lambda done, _total, t=task: bar.update(t, completed=done))
            member_reports.append({**member.describe(), "metrics": headline(metrics)})
        module = build_ensemble(members, method, weights)
        export_report = None
        if out is not None:
            from edgeresnet.export.parity import load_parity_images

            task = bar.add_task("export ONNX + parity", total=None, stats="")
            images_for_parity = load_parity_images(data, preprocess, max(parity_images, 1), seed=seed)
            result = export_ensemble(module, members, out, method=method, weights=weights, weights_from=weights_from,
                                     data=data, parity_images=images_for_parity, opset=opset, batch=profile,
                                     exporter=exporter,
                                     target=target_obj, stage=lambda name, _steps: bar.update(task, description=name))
            bar.update(task, total=1, completed=1)
            export_report = result.to_dict()
            runner = load_runner(out)
        else:
            runner = TorchRunner.from_model(module, preprocess, name="ensemble", device=device)
        task = bar.add_task(f"ensemble ({runner.backend})", total=len(labels), stats="")
        metrics = evaluate_runner(runner, images, labels, batch_size, names,
                                  on_batch=lambda done, _total: bar.update(task, completed=done))
    return {"schema": "edgeresnet.experiments.ensemble/1", "method": method,
            "weights": list(module.weights.tolist()), "weights_from": weights_from, "members": member_reports,
            "ensemble": {**headline(metrics), "backend": runner.backend, "path": str(out) if out else None,
                         "per_class": metrics["per_class"], "confusion_matrix": metrics["confusion_matrix"]},
            "evaluation": {"data": data, "split": split, "split_seed": seed, "n": int(len(labels)),
                           "class_names": names},
            "export": export_report, "notes": notes}


def _member_runner(member: Any, device: str | None) -> Any:
    """A member through the ordinary PyTorch runner, reusing the model already loaded from its checkpoint."""
    from edgeresnet.runners.torch_runner import TorchRunner

    return TorchRunner.from_model(member.model, member.preprocess, name=str(member.path), spec=member.spec,
                                  device=device)
