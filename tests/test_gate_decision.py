"""The gate package's decision layer: Verdict values, rules as data, reasons rendered apart from the numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeresnet.gate import GateSettings, Outcome, Status, Verdict, compare_latency, run_gate
from edgeresnet.gate.decision import (
    AccuracyFinding,
    AccuracyReason,
    FewSamples,
    Finding,
    LatencyReason,
    SpeedDrift,
    ThinTail,
    compare_accuracy,
    decide_latency,
)
from edgeresnet.gate.inputs import EnvDifference, VersionChange
from edgeresnet.gate.report import KeyResult

ROOT = Path(__file__).resolve().parent.parent


def test_verdict_values_are_the_strings_users_see():
    assert {v.value for v in Verdict} == {"pass", "improvement", "regression", "missing", "new", "not measured"}
    assert {s.value for s in Status} == {"compared", "missing", "new"}
    assert {o.value for o in Outcome} == {"pass", "fail"}
    # f-strings, str(), equality and JSON all give the plain string (a bare Enum prints "Verdict.REGRESSION")
    assert f"{Verdict.REGRESSION}: x" == "regression: x" and str(Verdict.NOT_MEASURED) == "not measured"
    assert f"{Verdict.PASS:>6}" == "  pass"
    assert Verdict.MISSING == "missing" and Verdict("new") is Verdict.NEW
    assert json.dumps({"v": Verdict.NOT_MEASURED, "o": Outcome.FAIL}) == '{"v": "not measured", "o": "fail"}'


@pytest.mark.parametrize(("change", "ci", "verdict", "finding"), [
    (0.12, (0.05, 0.20), Verdict.REGRESSION, Finding.SLOWER),
    (0.05, (0.01, 0.09), Verdict.PASS, Finding.WITHIN_TOLERANCE),  # exactly the tolerance is not above it
    (0.03, (0.01, 0.05), Verdict.PASS, Finding.WITHIN_TOLERANCE),
    (-0.12, (-0.20, -0.05), Verdict.IMPROVEMENT, Finding.FASTER),
    (0.12, (-0.01, 0.30), Verdict.PASS, Finding.NOT_SIGNIFICANT),
    (0.01, (-0.02, 0.04), Verdict.PASS, Finding.NO_CHANGE),
])
def test_latency_rule_needs_significance_and_size(change, ci, verdict, finding):
    got, why = decide_latency(change, ci, "median", 0.05, 0.95)
    assert got is verdict and why.finding is finding
    assert (why.change, why.ci, why.tolerance) == (change, ci, 0.05)


def test_reasons_render_the_numbers_they_carry():
    slower = LatencyReason(Finding.SLOWER, "p99", 0.123, (0.05, 0.2), 0.05, 0.95)
    assert slower.text() == str(slower) == ("p99 slower by +12.3% [+5.0%, +20.0%]: significant and above the 5.0% "
                                            "tolerance")
    noisy = LatencyReason(Finding.NOT_SIGNIFICANT, "median", -0.08, (-0.2, 0.04), 0.05, 0.9)
    assert noisy.text() == ("median -8.0% [-20.0%, +4.0%]: beyond the 5.0% tolerance but not significant at 90% "
                            "(noisy; more samples would decide)")
    dropped = AccuracyReason(AccuracyFinding.DROPPED, 95.0, 93.5, 1.5, 0.5, 360, 100)
    assert dropped.text() == ("top-1 95.00% -> 93.50%: dropped 1.50 points > 0.5 allowed; measured on different "
                              "image counts (360 vs 100)")
    assert ThinTail("p99", 500, 1000).text() == ("p99 of 500 samples rests on 5 of them; "
                                                 "use >= 1000 samples for a p99 gate")
    assert ThinTail("p90", 57, 100).text() == "p90 of 57 samples rests on 5 of them; use >= 100 samples for a p90 gate"
    assert SpeedDrift("current", 2, 0.3, 0.05).text().startswith("the machine's speed changed during current run 2: "
                                                                 "its second half is +30%")
    assert EnvDifference("GPU", "Orin", None, "cur.json").text() == "GPU 'Orin' vs none (cur.json)"
    assert VersionChange("torch", "2.3", "2.4").text() == "torch 2.3 -> 2.4"


def test_comparisons_keep_reasons_and_notes_as_data():
    rng = np.random.default_rng(0)
    base = (10 * np.exp(rng.normal(0, 0.4, 12))).tolist()
    cur = (11 * np.exp(rng.normal(0, 0.4, 12))).tolist()
    cmp = compare_latency([base], [cur], GateSettings())
    assert cmp.verdict is Verdict.PASS and cmp.why.change == cmp.change and cmp.why.ci == cmp.ci
    assert FewSamples(12) in cmp.findings and cmp.notes == [n.text() for n in cmp.findings]
    assert cmp.to_dict()["verdict"] == "pass" and cmp.to_dict()["reason"] == cmp.reason == cmp.why.text()
    acc = compare_accuracy({"top1": 95.0, "n": 360}, None, 0.5)
    assert acc.verdict is Verdict.MISSING and acc.why.finding is AccuracyFinding.CURRENT_LACKS


def test_key_warnings_merge_notes_and_file_warnings_once():
    row = KeyResult(("m", "cpu", "ort", "fp32", 1), Status.COMPARED, Verdict.PASS, notes=[FewSamples(12)],
                    file_warnings=["host CV 14%", "host CV 14%", FewSamples(12).text()])
    assert row.warnings == [FewSamples(12).text(), "host CV 14%"]


def test_report_json_carries_plain_strings():
    from test_gate import document, lognormal, result

    report = run_gate([("b.json", document(result(lognormal(1))))], [("c.json", document(result(lognormal(2))))],
                      GateSettings())
    text = json.dumps(report.to_dict())
    data = json.loads(text)
    assert data["verdict"] == "pass" and data["results"][0]["status"] == "compared"
    assert data["results"][0]["latency"]["verdict"] == "pass" and data["results"][0]["accuracy"]["verdict"] == "pass"
    assert "Verdict." not in text and "Status." not in text


def test_stats_and_decisions_import_no_heavy_module():
    # scipy.stats too: it takes seconds to import on a loaded machine, and `baseline update` never tests anything
    code = ("import sys, edgeresnet.gate; heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'onnx', 'onnxruntime', 'tensorrt', 'tensorrt_rtx', 'sklearn', 'matplotlib', 'scipy')]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_no_gate_module_over_500_lines():
    modules = (ROOT / "edgeresnet" / "gate").glob("*.py")
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in modules}
    assert sizes and max(sizes.values()) <= 500, sizes
