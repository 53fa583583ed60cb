"""The gate's report: the per-key results, their JSON form, and the terminal rows, Markdown (PR comment,
$GITHUB_STEP_SUMMARY) and JUnit XML renderers.

Why here: the statistics and verdicts stay testable without any formatting; these are pure string builders
over the structured results (the rich table is assembled by the CLI from ``table_rows``).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeresnet.gate.decision import (
    FAILING,
    AccuracyComparison,
    LatencyComparison,
    Note,
    Outcome,
    Reason,
    Status,
    Verdict,
)
from edgeresnet.gate.inputs import KEY_FIELDS, EnvComparison, Key, key_label
from edgeresnet.gate.settings import GateSettings

EXIT_PASS = 0
EXIT_REGRESSION = 1


@dataclass
class KeyResult:
    key: Key
    status: Status
    verdict: Verdict  # PASS | IMPROVEMENT | REGRESSION | MISSING | NEW
    latency: LatencyComparison | None = None
    accuracy: AccuracyComparison | None = None
    reasons: list[Reason] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)  # the latency comparison's warnings
    file_warnings: list[str] = field(default_factory=list)  # the current result file's own warnings

    @property
    def failed(self) -> bool:
        return self.verdict in FAILING

    @property
    def reason_texts(self) -> list[str]:
        return [r.text() for r in self.reasons]

    @property
    def warnings(self) -> list[str]:
        return list(dict.fromkeys([n.text() for n in self.notes] + self.file_warnings))

    def key_dict(self) -> dict[str, Any]:
        return dict(zip(KEY_FIELDS, self.key))


@dataclass
class GateReport:
    settings: GateSettings
    baseline_files: list[str]
    current_files: list[str]
    rows: list[KeyResult]
    environment: EnvComparison

    @property
    def failed(self) -> bool:
        return any(r.failed for r in self.rows)

    @property
    def exit_code(self) -> int:
        return EXIT_REGRESSION if self.failed else EXIT_PASS

    @property
    def verdict(self) -> Outcome:
        return Outcome.FAIL if self.failed else Outcome.PASS

    def summary(self) -> str:
        """'FAIL: 3 compared, 1 regression, 1 missing': the keys compared, then each other count that is not 0."""
        verdicts = Counter(r.verdict for r in self.rows)
        statuses = Counter(r.status for r in self.rows)
        parts = [f"{statuses[Status.COMPARED]} compared"]
        for label, count, plural in (("regression", verdicts[Verdict.REGRESSION], "s"),
                                     ("improvement", verdicts[Verdict.IMPROVEMENT], "s"),
                                     ("missing", statuses[Status.MISSING], ""), ("new", statuses[Status.NEW], "")):
            if count:
                parts.append(f"{count} {label}{plural if count > 1 else ''}")
        return f"{self.verdict.value.upper()}: " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for row in self.rows:
            item: dict[str, Any] = {"key": row.key_dict(), "status": row.status.value, "verdict": row.verdict.value,
                                    "reasons": row.reason_texts, "warnings": row.warnings}
            item["latency"] = _clean(row.latency.to_dict()) if row.latency else None
            item["accuracy"] = row.accuracy.to_dict() if row.accuracy else None
            rows.append(item)
        return {
            "schema": "edgeresnet.gate/1",
            "verdict": self.verdict.value,
            "exit_code": self.exit_code,
            "summary": self.summary(),
            "settings": asdict(self.settings) | {"method_resolved": self.settings.resolved_method()},
            "baseline": self.baseline_files,
            "current": self.current_files,
            "environment": {"differences": self.environment.differences, "allowed": self.environment.allowed,
                            "info": self.environment.info},
            "results": rows,
        }


def _clean(value: Any) -> Any:
    """JSON has no infinity: an interval that does not exist is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


HEADERS = ("result", "metric (ms)", "change [CI]", "p", "top-1 (%)", "verdict")
_ICONS = {Verdict.PASS: "pass", Verdict.IMPROVEMENT: "improvement", Verdict.REGRESSION: "REGRESSION",
          Verdict.MISSING: "MISSING", Verdict.NEW: "new"}


def _pct(value: float) -> str:
    return "n/a" if math.isinf(value) or math.isnan(value) else f"{value * 100:+.1f}%"


def _latency_cells(row: KeyResult) -> tuple[str, str, str]:
    lat = row.latency
    if lat is None:
        return "-", "-", "-"
    metric = f"{lat.metric} {lat.baseline:.4g} -> {lat.current:.4g}"
    change = f"{_pct(lat.change)} [{_pct(lat.ci[0])}, {_pct(lat.ci[1])}]"
    p = "<1e-4" if lat.p_value < 1e-4 else f"{lat.p_value:.2g}"
    return metric, change, p


def _accuracy_cell(row: KeyResult) -> str:
    acc = row.accuracy
    if acc is None or (acc.baseline_top1 is None and acc.current_top1 is None):
        return "-"
    b = "-" if acc.baseline_top1 is None else f"{acc.baseline_top1:.2f}"
    c = "-" if acc.current_top1 is None else f"{acc.current_top1:.2f}"
    text = f"{b} -> {c}"
    if acc.verdict in FAILING:
        text += f" ({acc.verdict.value})"
    return text


def table_rows(report: GateReport) -> list[tuple[str, ...]]:
    """One tuple of cells per key, matching ``HEADERS``."""
    out: list[tuple[str, ...]] = []
    for row in report.rows:
        metric, change, p = _latency_cells(row)
        icon = _ICONS.get(row.verdict, row.verdict.value)
        out.append((key_label(row.key), metric, change, p, _accuracy_cell(row), icon))
    return out


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: GateReport) -> str:
    """A PR comment / job summary: verdict first, then the table, then what the reader must know."""
    s = report.settings
    status = "FAILED" if report.failed else "passed"
    lines = [f"### edgeresnet regression gate {status}", "", f"**{report.summary()}**", ""]
    lines.append("| " + " | ".join(HEADERS) + " |")
    lines.append("|" + "|".join(["---"] * len(HEADERS)) + "|")
    for row_cells in table_rows(report):
        cells = list(row_cells)
        if cells[-1] in ("REGRESSION", "MISSING"):
            cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    lines.append("")
    details = []
    for row in report.rows:
        for reason in row.reason_texts:
            details.append(f"- `{_md_escape(key_label(row.key))}`: {_md_escape(reason)}")
        for warning in row.warnings:
            details.append(f"- `{_md_escape(key_label(row.key))}` warning: {_md_escape(warning)}")
    if details:
        lines += ["<details><summary>Details</summary>", "", *details, "", "</details>", ""]
    env = report.environment
    if env.differences:
        lines.append("Environment differs (compared anyway, `--allow-env-change`): "
                     + "; ".join(_md_escape(d) for d in env.differences))
        lines.append("")
    if env.info:
        lines.append("Version changes: " + "; ".join(_md_escape(d) for d in env.info))
        lines.append("")
    lines.append(
        f"Settings: metric {s.metric}, tolerance {s.tolerance:.1%}, confidence {s.confidence:g}, "
        f"max top-1 drop {s.max_accuracy_drop:g} points, method {s.resolved_method()}"
        f"{f', {s.blocks} blocks per side' if s.blocks else ''}. "
        "A regression needs a slowdown that is both significant (the interval lies above 0) and larger than "
        "the tolerance."
        + (" For the median the change is the Hodges-Lehmann shift of all samples, which can differ from the "
           "ratio of the two medians when a run is bimodal." if s.resolved_method() == "rank" else "")
    )
    lines.append("")
    lines.append("Baseline: " + ", ".join(f"`{_md_escape(f)}`" for f in report.baseline_files)
                 + " · Current: " + ", ".join(f"`{_md_escape(f)}`" for f in report.current_files))
    return "\n".join(lines) + "\n"


def to_junit(report: GateReport) -> str:
    """JUnit XML: one test case per result key; regressions and missing results are failures, new ones skipped."""
    suite = ET.Element("testsuite", {
        "name": "edgeresnet.regress",
        "tests": str(len(report.rows)),
        "failures": str(sum(1 for r in report.rows if r.failed)),
        "errors": "0",
        "skipped": str(sum(1 for r in report.rows if r.status is Status.NEW)),
    })
    props = ET.SubElement(suite, "properties")
    s = report.settings
    for name, value in (("metric", s.metric), ("tolerance", f"{s.tolerance:g}"), ("confidence", f"{s.confidence:g}"),
                        ("max_accuracy_drop", f"{s.max_accuracy_drop:g}"), ("method", s.resolved_method()),
                        ("baseline", ",".join(report.baseline_files)), ("current", ",".join(report.current_files))):
        ET.SubElement(props, "property", {"name": name, "value": value})
    for row in report.rows:
        model, target, backend, precision, batch = row.key
        case = ET.SubElement(suite, "testcase", {"classname": f"edgeresnet.regress.{model}",
                                                 "name": f"{target}/{backend}/{precision}/b{batch}"})
        message = "; ".join(row.reason_texts)
        if row.failed:
            failure = ET.SubElement(case, "failure", {"message": message, "type": row.verdict.value})
            failure.text = "\n".join(row.reason_texts + row.warnings)
        elif row.status is Status.NEW:
            ET.SubElement(case, "skipped", {"message": message})
        else:
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join(row.reason_texts + row.warnings)
    root = ET.Element("testsuites", {"name": "edgeresnet", "tests": suite.get("tests", "0"),
                                     "failures": suite.get("failures", "0")})
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
