"""The gate as a pipeline stage: result files in, a ``GateReport`` out (verdicts per key, exit code)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from edgeresnet.errors import UserError
from edgeresnet.gate.decision import (
    PairingReason,
    Reason,
    Status,
    Verdict,
    compare_accuracy,
    compare_latency,
    key_verdict,
    missing_verdict,
)
from edgeresnet.gate.inputs import Documents, collect, compare_environments, key_label, load_results
from edgeresnet.gate.report import GateReport, KeyResult
from edgeresnet.gate.settings import GateSettings


def run_gate(baseline: Documents, current: Documents, settings: GateSettings) -> GateReport:
    """Compare validated documents (``(name, document)`` per file, in order); UserError for input problems."""
    settings.validate()
    if not baseline or not current:
        raise UserError("give at least one --baseline and one --current result file")
    env = compare_environments(baseline, current, settings.allow_env_change)
    if env.refused:
        raise UserError(env.refusal())
    base = collect(baseline)
    cur = collect(current)
    common = [k for k in base.order if k in cur.runs]
    if not common:
        raise UserError("no result in the current run matches the baseline by (model, target, backend, precision, "
                        f"batch): baseline has {', '.join(key_label(k) for k in base.order[:3]) or 'nothing'}, "
                        f"current has {', '.join(key_label(k) for k in cur.order[:3]) or 'nothing'}")
    rows: list[KeyResult] = []
    for key in base.order:
        if key not in cur.runs:
            verdict, missing = missing_verdict(settings.allow_missing)
            rows.append(KeyResult(key, Status.MISSING, verdict, reasons=[missing]))
            continue
        latency = compare_latency(base.runs[key], cur.runs[key], settings)
        accuracy = compare_accuracy(base.accuracy[key], cur.accuracy[key], settings.max_accuracy_drop)
        reasons: list[Reason] = [latency.why]
        if accuracy.baseline_top1 is not None or accuracy.current_top1 is not None:
            reasons.append(accuracy.why)
        rows.append(KeyResult(key, Status.COMPARED, key_verdict(latency, accuracy, settings.allow_missing), latency,
                              accuracy, reasons, notes=list(latency.findings), file_warnings=cur.warnings[key]))
    for key in cur.order:
        if key not in base.runs:
            rows.append(KeyResult(key, Status.NEW, Verdict.NEW, reasons=[PairingReason(Status.NEW)]))
    return GateReport(settings=settings, baseline_files=[n for n, _ in baseline], current_files=[n for n, _ in current],
                      rows=rows, environment=env)


def regress(baseline: Iterable[str | Path], current: Iterable[str | Path],
            settings: GateSettings | None = None) -> GateReport:
    """Read, validate and compare result files (``--baseline`` / ``--current`` may each be repeated)."""
    base_docs = [(str(p), load_results(p, "--baseline")) for p in baseline]
    cur_docs = [(str(p), load_results(p, "--current")) for p in current]
    return run_gate(base_docs, cur_docs, settings or GateSettings())
