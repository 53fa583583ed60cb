"""The regression gate's verdicts as terminal rows, Markdown (PR comment, $GITHUB_STEP_SUMMARY) and JUnit XML.

Why separate from ``gate.py``: the statistics stay testable without any formatting; these renderers are
pure string builders (the rich table is assembled by the CLI from ``table_rows``).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from edgeresnet.gate import GateReport, KeyResult, key_label

HEADERS = ("result", "metric (ms)", "change [CI]", "p", "top-1 (%)", "verdict")
_ICONS = {"pass": "pass", "improvement": "improvement", "regression": "REGRESSION", "missing": "MISSING", "new": "new"}


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
    if acc.verdict in ("regression", "missing"):
        text += f" ({acc.verdict})"
    return text


def table_rows(report: GateReport) -> list[tuple[str, ...]]:
    """One tuple of cells per key, matching ``HEADERS``."""
    out = []
    for row in report.rows:
        metric, change, p = _latency_cells(row)
        out.append((key_label(row.key), metric, change, p, _accuracy_cell(row), _ICONS.get(row.verdict, row.verdict)))
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
    for cells in table_rows(report):
        cells = list(cells)
        if cells[-1] in ("REGRESSION", "MISSING"):
            cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    lines.append("")
    details = []
    for row in report.rows:
        for reason in row.reasons:
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
        "skipped": str(sum(1 for r in report.rows if r.status == "new")),
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
        message = "; ".join(row.reasons)
        if row.failed:
            failure = ET.SubElement(case, "failure", {"message": message, "type": row.verdict})
            failure.text = "\n".join(row.reasons + row.warnings)
        elif row.status == "new":
            ET.SubElement(case, "skipped", {"message": message})
        else:
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join(row.reasons + row.warnings)
    root = ET.Element("testsuites", {"name": "edgeresnet", "tests": suite.get("tests", "0"),
                                     "failures": suite.get("failures", "0")})
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
