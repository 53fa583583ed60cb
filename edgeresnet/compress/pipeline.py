"""The prune and distill runs behind the CLI: checkpoint in, checkpoint (+ manifest) and a report out.

Each run measures what it changed on the artifact it writes: parameters, MACs, ONNX size, top-1 on the
test split before and after, so nobody loses accuracy silently. The sweep over several ratios is
``prune_sweep``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError

Say = Callable[[str], None]


def quiet(_msg: str) -> None:
    """The default ``say``: progress messages go nowhere."""
    return None


# -- inputs ----------------------------------------------------------------------------------------------
def load_source(path: str | Path, option: str = "MODEL") -> tuple[dict[str, Any], Any, Any, Any]:
    """(checkpoint dict, model in eval mode, spec, Preprocess) of one of our checkpoints."""
    from edgeresnet.artifacts import require_file
    from edgeresnet.data import Preprocess
    from edgeresnet.models import load_checkpoint, model_from_checkpoint

    require_file(path, f"{option} checkpoint")
    if Path(path).suffix.lower() not in (".pt", ".pth"):
        raise UserError(f"{option} {path}: expected an edgeresnet checkpoint (.pt); ONNX or engine files cannot be "
                        "pruned or distilled")
    ckpt = load_checkpoint(path)
    model, spec = model_from_checkpoint(ckpt, path)
    return ckpt, model, spec, Preprocess.from_dict(ckpt["preprocess"])


def resolve_data(data: str | None, source: str | Path, preprocess: Any) -> str:
    """``--data``, else the data set recorded in the source's manifests, else digits when the classes are 0-9
    (fashion-mnist when they are its ten names)."""
    from edgeresnet.export.onnx_meta import data_spec_of

    if data:
        return data
    recorded = data_spec_of(source)
    if recorded:
        return recorded
    if tuple(preprocess.class_names) == tuple(str(i) for i in range(10)):
        return "digits"
    from edgeresnet.data.idx import FASHION_CLASSES, FASHION_MNIST

    if tuple(preprocess.class_names) == FASHION_CLASSES:
        return FASHION_MNIST
    raise UserError(f"{source}: no data set recorded with it; pass --data (digits or an ImageFolder path)")


def load_splits(data: str, preprocess: Any, seed: int) -> Any:
    """The data set, preprocessed exactly as the checkpoint says (its mean/std/size, not the preset's)."""
    from edgeresnet.data import load_data

    splits = load_data(data, preprocess.image_size, seed=seed)
    if preprocess.class_names and tuple(splits.class_names) != tuple(preprocess.class_names):
        raise UserError(f"--data {data}: classes {list(splits.class_names)[:5]}... do not match the model's "
                        f"{list(preprocess.class_names)[:5]}...; use the data set the model was trained on")
    splits.preprocess = preprocess
    return splits


def load_teacher(teacher: str | None, default: Any, classes: int, *, image_size: int) -> tuple[Any, str | None]:
    """``None`` -> the default (unpruned) model; ``"none"`` -> no teacher; a path -> that checkpoint."""
    from edgeresnet.compress.distill import output_classes

    if teacher is None:
        return default, None
    if teacher.lower() == "none":
        return None, None
    _ckpt, model, spec, preprocess = load_source(teacher, "--teacher")
    if output_classes(model) != classes:
        raise UserError(f"--teacher {teacher}: teacher has {output_classes(model)} classes but the model has "
                        f"{classes}; use a teacher trained on the same classes")
    if preprocess.image_size != image_size:
        raise UserError(f"--teacher {teacher}: teacher expects {preprocess.image_size}px input, the model "
                        f"{image_size}px; use a teacher trained at the same image size")
    return model, teacher


# -- prune -----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class FinetuneOptions:
    epochs: int = 0
    batch_size: int = 64
    lr: float | None = None
    seed: int = 0
    temperature: float = 4.0
    alpha: float = 0.7
    progress: bool = True
    bn_images: int = 512  # training images to re-estimate BatchNorm statistics after pruning (0 = off)
    images: int = 0  # fine-tune on this many training images (stratified, seeded); 0 = the whole train split

    def validate(self) -> FinetuneOptions:
        """Refuse the first out-of-range option (KD's temperature and alpha as ``DistillSettings`` does)."""
        for bad, message in ((self.epochs < 0, f"--finetune-epochs {self.epochs}: must be 0 or more"),
                             (self.bn_images < 0, f"--bn-images {self.bn_images}: must be 0 (off) or more"),
                             (self.batch_size < 1, f"--batch-size {self.batch_size}: must be at least 1"),
                             (self.images < 0, f"--finetune-images {self.images}: must be 0 (all) or more"),
                             (self.lr is not None and not self.lr > 0, f"--lr {self.lr}: must be positive")):
            if bad:
                raise UserError(message)
        from edgeresnet.compress.distill import DistillSettings

        DistillSettings(self.temperature, self.alpha)  # validates
        return self


def finetune_pruned(model: Any, splits: Any, teacher: Any, options: FinetuneOptions,
                    spec: Any) -> tuple[Any, dict[str, Any]]:
    """Fine-tune with KD from ``teacher`` (or plain cross-entropy without one)."""
    from edgeresnet.compress.distill import Distiller, DistillSettings
    from edgeresnet.compress.measure import finetune

    if options.epochs == 0:
        return model, {"epochs": 0}
    if options.images:
        from edgeresnet.data.sources import with_train_subset

        splits = with_train_subset(splits, options.images, options.seed)
    if teacher is None:
        tuned, info = finetune(model, splits, epochs=options.epochs, batch_size=options.batch_size, lr=options.lr,
                               seed=options.seed, progress=options.progress, spec=spec)
        info["kd"] = None
    else:
        settings = DistillSettings(options.temperature, options.alpha)
        with Distiller(teacher, model, settings, splits.preprocess.image_size) as distiller:
            tuned, info = finetune(distiller.trainable(), splits, epochs=options.epochs,
                                   batch_size=options.batch_size, lr=options.lr, seed=options.seed,
                                   progress=options.progress, loss_fn=distiller.loss_fn, spec=spec)
        info["kd"] = settings.to_dict()
    info["train_images"] = len(splits.samples("train"))
    return tuned, info


def prune_once(model: Any, spec: Any, preprocess: Any, splits: Any, settings: Any, teacher: Any,
               options: FinetuneOptions, *, test: tuple[Any, Any], say: Say = quiet,
               onnx: bool = True, exporter: str | None = None) -> dict[str, Any]:
    """Prune ``model`` (left untouched), fine-tune, measure; returns the pruned model and its numbers."""
    from edgeresnet.compress.measure import accuracy_outcomes, onnx_size_bytes
    from edgeresnet.compress.prune import prune_model, recalibrate_batchnorm

    images, labels = test
    result = prune_model(model, settings, preprocess.image_size, preprocess=preprocess, exporter=exporter, say=say)
    say(f"pruned: {result.after.params / 1e6:.2f}M params, {result.after.gmacs:.3f} GMACs "
        f"({result.after.macs / result.before.macs:.1%} of the FLOPs)")
    acc_raw, correct_raw = accuracy_outcomes(result.model, images, labels)
    bn_used = 0
    if options.bn_images > 0:
        bn_used = recalibrate_batchnorm(result.model, splits.arrays("train", limit=options.bn_images)[0])
        say(f"BatchNorm statistics re-estimated on {bn_used} training images")
    acc_pruned, correct_pruned = accuracy_outcomes(result.model, images, labels) if bn_used else (acc_raw, correct_raw)
    tuned, ft = finetune_pruned(result.model, splits, teacher, options, spec)
    tuned = getattr(tuned, "student", tuned)  # a feature-KD wrapper hands back student + adapters
    acc_after, correct_after = (accuracy_outcomes(tuned, images, labels) if options.epochs
                                else (acc_pruned, correct_pruned))
    report = result.summary()
    report["accuracy"] = {"pruned_raw": round(acc_raw, 3), "pruned_no_finetune": round(acc_pruned, 3),
                          "after": round(acc_after, 3)}
    report["bn_recalibration_images"] = bn_used
    report["finetune"] = {k: v for k, v in ft.items() if k != "history"}
    report["finetune_history"] = ft.get("history", [])
    if onnx:
        say("exporting ONNX to measure its size")
        report["onnx_bytes"] = onnx_size_bytes(tuned, preprocess, exporter)
    # per-image outcomes (True: top-1 correct) on ``test``, for the paired test against the unpruned model
    return {"model": tuned.eval(), "report": report, "result": result, "correct": correct_after}


def save_checkpoint(model: Any, spec: Any, preprocess: Any, out: Path, *, command: str, source: Path | None,
                    teacher: str | None, settings: dict[str, Any], extra: dict[str, Any],
                    option: str = "--out") -> Path:
    """A compressed model's checkpoint + sidecar manifest, through the one checkpoint writer (atomic: no
    half-written file under ``out``); a full disk is one line naming ``option``."""
    from edgeresnet.artifacts import check_output_dir, no_space_error
    from edgeresnet.models import make_checkpoint
    from edgeresnet.train.state import is_disk_full, write_checkpoint_file

    target = check_output_dir(out, option)
    target.parent.mkdir(parents=True, exist_ok=True)
    ckpt = make_checkpoint(model, spec, preprocess.to_dict(), compression={"command": command, **_plain(extra)})
    inputs: dict[str, Any] = {"source": source} if source is not None else {}
    if teacher:
        inputs["teacher"] = teacher
    try:
        return write_checkpoint_file(target, ckpt, command=command, inputs=inputs, settings=settings,
                                     manifest_extra={"model": spec.to_dict(), "preprocess": preprocess.to_dict(),
                                                     **extra})
    except OSError as exc:
        if is_disk_full(exc):
            raise no_space_error(option, target, target.parent, exc) from exc
        raise


def _plain(value: Any) -> Any:
    """Only plain types go into a checkpoint (it must load with ``weights_only=True``)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def run_prune(source: Path, out: Path, settings: Any, options: FinetuneOptions, *, teacher: str | None,
              data: str | None, say: Say = quiet, exporter: str | None = None) -> dict[str, Any]:
    from edgeresnet.artifacts import check_output_dir, sha256_file
    from edgeresnet.compress.measure import accuracy_outcomes, onnx_size_bytes
    from edgeresnet.evaluate.intervals import wilson_interval
    from edgeresnet.evaluate.paired import compare_outcomes

    check_output_dir(out)
    if Path(out).resolve() == Path(source).resolve():
        raise UserError(f"--out {out}: would overwrite the model being pruned; choose another path")
    _ckpt, model, spec, preprocess = load_source(source)
    teacher_model, teacher_path = load_teacher(teacher, model, spec.num_classes, image_size=preprocess.image_size)
    data_spec = resolve_data(data, source, preprocess)
    splits = load_splits(data_spec, preprocess, options.seed)
    test = splits.arrays("test")
    say(f"data {data_spec}: {len(test[1])} test images at {preprocess.image_size}px")
    acc_before, correct_before = accuracy_outcomes(model, *test)
    onnx_before = onnx_size_bytes(model, preprocess, exporter)
    run = prune_once(model, spec, preprocess, splits, settings, teacher_model, options, test=test, say=say,
                     exporter=exporter)
    report = run["report"]
    report["accuracy"]["before"] = round(acc_before, 3)
    report["accuracy"]["drop"] = round(acc_before - report["accuracy"]["after"], 3)
    # unpruned and pruned on the same test images: McNemar's test on their per-image outcomes
    paired = compare_outcomes(correct_before, run["correct"])
    n_test = int(len(test[1]))
    report["accuracy"].update({
        "before_ci95": wilson_interval(int(correct_before.sum()), n_test).percent(),
        "after_ci95": wilson_interval(int(run["correct"].sum()), n_test).percent(),
        "drop_ci95": paired.to_dict()["drop_ci95"], "p_value": paired.p_value, "significant": paired.significant,
        "paired": paired.to_dict()})
    report["onnx_bytes"] = {"before": onnx_before, "after": report["onnx_bytes"]}
    report.update({"source": str(source), "source_sha256": sha256_file(source), "out": str(out), "data": data_spec,
                   "test_images": int(len(test[1])), "teacher": teacher_path or ("none" if teacher_model is None
                                                                                  else "source (unpruned)")})
    manifest_settings = {**settings.to_dict(), "data": data_spec, "bn_images": options.bn_images,
                         "finetune_epochs": options.epochs,
                         "batch_size": options.batch_size, "lr": options.lr, "seed": options.seed,
                         "teacher": report["teacher"], "temperature": options.temperature, "alpha": options.alpha}
    history = report.pop("finetune_history")
    save_checkpoint(run["model"], spec, preprocess, Path(out), command="prune", source=source, teacher=teacher_path,
                    settings=manifest_settings, extra={"pruning": report, "finetune_history": history})
    report["finetune_history"] = history
    return report


# -- distill ---------------------------------------------------------------------------------------------
def run_distill(teacher_path: Path, student: str, out: Path, settings: Any, *, epochs: int, batch_size: int,
                lr: float | None, seed: int, data: str | None, baseline: bool = True, progress: bool = True,
                say: Say = quiet) -> dict[str, Any]:
    """Teacher vs student trained alone vs student distilled, same budget, same initial weights."""
    import torch

    from edgeresnet.artifacts import check_output_dir, sha256_file
    from edgeresnet.compress.distill import Distiller, check_compatible
    from edgeresnet.compress.flops import count_costs
    from edgeresnet.compress.measure import accuracy, finetune
    from edgeresnet.models import ARCHS, ModelSpec, build_model

    if epochs < 1:
        raise UserError(f"--epochs {epochs}: must be at least 1")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    check_output_dir(out)
    _tc, teacher, tspec, preprocess = load_source(teacher_path, "--teacher")
    if student in ARCHS:
        torch.manual_seed(seed)
        sspec = ModelSpec(student, tspec.num_classes, small_stem=tspec.small_stem, stem_stride=tspec.stem_stride)
        student_model, student_path = build_model(sspec), None
    else:
        _sc, student_model, sspec, spre = load_source(student, "--student")
        student_path = student
        if (spre.image_size, tuple(spre.mean), tuple(spre.std)) != (preprocess.image_size, tuple(preprocess.mean),
                                                                     tuple(preprocess.std)):
            raise UserError(f"--student {student}: its preprocessing ({spre.image_size}px, mean {list(spre.mean)}) "
                            f"differs from the teacher's ({preprocess.image_size}px, mean {list(preprocess.mean)}); "
                            "both must see the same input")
    check_compatible(teacher, student_model)
    for p in (teacher_path, student_path):
        if p is not None and Path(out).resolve() == Path(p).resolve():
            raise UserError(f"--out {out}: would overwrite an input checkpoint; choose another path")
    data_spec = resolve_data(data, teacher_path, preprocess)
    splits = load_splits(data_spec, preprocess, seed)
    test = splits.arrays("test")
    say(f"data {data_spec}: {len(test[1])} test images at {preprocess.image_size}px")
    initial = copy.deepcopy(student_model)
    acc_teacher = accuracy(teacher, *test)
    acc_initial = accuracy(initial, *test)
    rows: dict[str, Any] = {}
    if baseline:
        say(f"training the student alone ({epochs} epochs, cross-entropy)")
        alone, info_alone = finetune(copy.deepcopy(initial), splits, epochs=epochs, batch_size=batch_size, lr=lr,
                                     seed=seed, progress=progress, spec=sspec, from_scratch=student_path is None)
        rows["student_alone"] = {"top1": round(accuracy(alone, *test), 3),
                                 "best_val_acc": info_alone.get("best_val_acc")}
    say(f"distilling into the student ({epochs} epochs, T={settings.temperature}, alpha={settings.alpha}"
        f"{', feature loss' if settings.feature_loss else ''})")
    with Distiller(teacher, copy.deepcopy(initial), settings, preprocess.image_size) as distiller:
        trained, info = finetune(distiller.trainable(), splits, epochs=epochs, batch_size=batch_size, lr=lr,
                                 seed=seed, progress=progress, loss_fn=distiller.loss_fn,
                                 spec=sspec if len(distiller.adapters) == 0 else None,
                                 from_scratch=student_path is None)
        adapters = {k: list(v.weight.shape) for k, v in distiller.adapters.items()}
    distilled = getattr(trained, "student", trained).eval()
    rows["distilled"] = {"top1": round(accuracy(distilled, *test), 3), "best_val_acc": info.get("best_val_acc")}
    t_cost, s_cost = count_costs(teacher, preprocess.image_size), count_costs(distilled, preprocess.image_size)
    report = {
        "teacher": {"file": str(teacher_path), "arch": tspec.arch, "top1": round(acc_teacher, 3),
                    "params": t_cost.params, "gmacs": round(t_cost.gmacs, 4)},
        "student": {"source": student_path or f"{student} (random init, seed {seed})", "arch": sspec.arch,
                    "initial_top1": round(acc_initial, 3), "params": s_cost.params, "gmacs": round(s_cost.gmacs, 4)},
        **rows,
        "settings": {**settings.to_dict(), "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                     "data": data_spec},
        "adapters": adapters, "recipe": {k: v for k, v in info.items() if k != "history"}, "data": data_spec,
        "test_images": int(len(test[1])),
        "teacher_sha256": sha256_file(teacher_path), "out": str(out),
    }
    if "student_alone" in rows:
        report["kd_gain"] = round(rows["distilled"]["top1"] - rows["student_alone"]["top1"], 3)
    save_checkpoint(distilled, sspec, preprocess, Path(out), command="distill",
                    source=Path(student_path) if student_path else None, teacher=str(teacher_path),
                    settings=report["settings"], extra={"distillation": {k: v for k, v in report.items()
                                                                        if k not in ("recipe",)},
                                                         "history": info.get("history", [])})
    return report
