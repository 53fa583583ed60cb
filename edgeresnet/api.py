"""The Python API: every stage of the tool as a function, each the one the CLI command calls.

Lazy: importing this module (or ``edgeresnet``) imports none of torch, onnx, onnxruntime or TensorRT;
a name is resolved, and its stage module imported, on first use (PEP 562 module ``__getattr__``,
https://peps.python.org/pep-0562/).

    from edgeresnet.api import TrainRecipe, train, export, calibrate, build, benchmark, regress

``train``, ``evaluate``, ``export`` and ``report`` are reached here, not as ``edgeresnet.<name>``:
those names are sub-packages of ``edgeresnet``, and the import system binds an imported submodule as an
attribute of its parent package ("the submodule's name is bound in the parent module's namespace",
https://docs.python.org/3/reference/import.html#submodules), which would replace a function of that name.
Every other stage is also ``edgeresnet.<name>``.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> (module, attribute); each stage takes typed settings or keyword options and returns its result
STAGES: dict[str, tuple[str, str]] = {
    "train": ("edgeresnet.train.job", "run_training"),  # (TrainRecipe, out) -> TrainRun
    "import_weights": ("edgeresnet.models.weights_import", "import_weights"),  # ImportSettings -> ImportResult
    "evaluate": ("edgeresnet.evaluate", "evaluate_model_file"),  # (model file, data, split) -> metrics dict
    "write_evaluation": ("edgeresnet.evaluate", "write_evaluation"),
    "export": ("edgeresnet.export.checkpoint", "export_checkpoint"),  # (checkpoint, out.onnx) -> ExportResult
    "verify": ("edgeresnet.export.verify", "verify"),  # (artifact A, artifact B) -> VerifyResult
    "prune": ("edgeresnet.compress.pipeline", "run_prune"),  # (checkpoint, out, PruneSettings, FinetuneOptions)
    "distill": ("edgeresnet.compress.pipeline", "run_distill"),
    "calibrate": ("edgeresnet.compress.ptq_stage", "calibrate"),  # CalibrateSettings -> CalibrateResult
    "qat": ("edgeresnet.compress.ptq_stage", "qat"),  # QatSettings -> QatReport
    "build": ("edgeresnet.trt.build", "build"),  # BuildSettings -> BuildResult
    "benchmark": ("edgeresnet.bench.stage", "benchmark"),  # (models, BenchSettings) -> BenchmarkOutput
    "import_trtexec": ("edgeresnet.bench.stage", "import_trtexec_run"),  # trtexec log/times -> BenchmarkOutput
    "benchmark_run_dir": ("edgeresnet.bench.rundir", "benchmark_run_dir"),
    "report": ("edgeresnet.report.html", "write_report"),  # (run_dir, out.html) -> Path
    "regress": ("edgeresnet.gate.stage", "regress"),  # (baseline files, current files, GateSettings) -> GateReport
    "promote_baseline": ("edgeresnet.gate.baseline", "promote_baseline"),  # (result, into) -> Promotion
    "evaluate_ensemble": ("edgeresnet.experiments.ensemble", "evaluate_ensemble"),  # EnsembleSettings -> EnsembleReport
    "cross_validate": ("edgeresnet.experiments.cv", "run_cross_validation"),  # (TrainRecipe, out) -> cv.json dict
    "tune": ("edgeresnet.experiments.tune", "run_tune"),  # (TrainRecipe, space, out) -> tune.json dict
    "run_demo": ("edgeresnet.demo", "run_demo"),
}

SETTINGS: dict[str, tuple[str, str]] = {
    "TrainRecipe": ("edgeresnet.train.recipe", "TrainRecipe"),
    "ImportSettings": ("edgeresnet.models.weights_import", "ImportSettings"),
    "PruneSettings": ("edgeresnet.compress.prune", "PruneSettings"),
    "FinetuneOptions": ("edgeresnet.compress.pipeline", "FinetuneOptions"),
    "CalibrateSettings": ("edgeresnet.compress.ptq_stage", "CalibrateSettings"),
    "QatSettings": ("edgeresnet.compress.ptq_stage", "QatSettings"),
    "BuildSettings": ("edgeresnet.trt.build", "BuildSettings"),
    "BenchSettings": ("edgeresnet.bench.artifact", "BenchSettings"),
    "GateSettings": ("edgeresnet.gate.settings", "GateSettings"),
    "EnsembleSettings": ("edgeresnet.experiments.ensemble", "EnsembleSettings"),
    "UserError": ("edgeresnet.errors", "UserError"),
}

NAMES: dict[str, tuple[str, str]] = {**STAGES, **SETTINGS}
__all__ = sorted(NAMES)


def resolve(name: str) -> Any:
    """The object behind an API name (imports its module)."""
    module, attribute = NAMES[name]
    return getattr(importlib.import_module(module), attribute)


def __getattr__(name: str) -> Any:
    if name in NAMES:
        value = resolve(name)
        globals()[name] = value  # once resolved, a plain module attribute
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(NAMES))
