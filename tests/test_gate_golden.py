"""The gate package against the reports of the module it replaced, on seeded scenarios.

``tests/data/gate/golden_reports.json`` holds the JSON, Markdown and JUnit written by the single-module gate
(``edgeresnet/gate.py`` and ``edgeresnet/gate_report.py`` at commit bbe6d01) for the scenarios below; the
package must write the same text, and the same numbers up to float rounding (its p-values now come from
scipy.stats.mannwhitneyu).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeresnet.gate import GateSettings, run_gate, to_junit, to_markdown
from test_gate import ORIN_ENV, document, lognormal, result

GOLDEN = Path(__file__).parent / "data" / "gate" / "golden_reports.json"


def scenarios() -> list[tuple[str, list[dict], list[dict], dict]]:
    """(name, baseline documents, current documents, settings); seeded, so the same every run."""
    base = document(result(lognormal(1)), result(lognormal(2), model="resnet50"), result(lognormal(3), model="acc"),
                    result(lognormal(9), model="noacc", top1=None))
    cur = document(result(lognormal(4, scale=1.25)), result(lognormal(5), model="new", top1=None),
                   result(lognormal(6), model="acc", top1=93.0), result(lognormal(10, scale=0.7), model="noacc"))
    small_b = document(result(lognormal(1, 12, sigma=0.4)), result(lognormal(2, 40), model="x"))
    noisy = result(lognormal(3, 12, sigma=0.4, scale=1.1))
    noisy["warnings"] = ["host CV 14% above 10%", "host CV 14% above 10%"]
    noisy["accuracy"] = {"top1": 95.2, "top5": 99.0, "n": 100}
    small_c = document(noisy, result(lognormal(4, 40, scale=1.02), model="x", top1=94.6))
    big = lognormal(1, 3000, sigma=0.03)
    tail = np.asarray(lognormal(2, 3000, sigma=0.03))
    tail[::20] *= 1.5
    other = dict(ORIN_ENV, power_mode="7W", tensorrt="8.6.2", gpu={"name": "Xavier"},
                 versions={"tensorrt": "8.6.2", "torch": "2.3"})
    o15 = document(result(lognormal(1), target="orin-nano", backend="trt"), env=ORIN_ENV)
    o7 = document(result(lognormal(2), target="orin-nano", backend="trt"), env=other)
    steady, jumpy = lognormal(1, 200), lognormal(2, 200)[:100] + lognormal(3, 100, scale=1.3)
    return [
        ("mixed", [base], [cur], {}),
        ("mixed-allow-missing-blocks", [base], [cur], {"allow_missing": True, "blocks": 10}),
        ("small-noisy", [small_b], [small_c], {}),
        ("tail-p99", [document(result(big))], [document(result(tail.tolist()))], {"metric": "p99", "resamples": 400}),
        ("env-allowed-rounds", [o15, o15], [o7, o7], {"allow_env_change": True, "metric": "p90", "resamples": 300}),
        ("drift", [document(result(steady)), document(result(lognormal(11, 200, scale=1.2)))],
         [document(result(jumpy)), document(result(lognormal(12, 200)))], {}),
        ("tiny-exact", [document(result([1.0, 2.0, 3.0]))], [document(result([4.0, 5.0, 6.0]))], {"confidence": 0.9}),
    ]


def _same(old: Any, new: Any, where: str = "") -> None:
    """Equal values, keys in the same order; floats to 1e-9 relative (bits of the last place may move)."""
    if isinstance(old, float) and isinstance(new, float):
        assert math.isclose(old, new, rel_tol=1e-9, abs_tol=1e-15), (where, old, new)
    elif isinstance(old, dict):
        assert isinstance(new, dict) and list(old) == list(new), (where, list(old), new)
        for key in old:
            _same(old[key], new[key], f"{where}/{key}")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(old) == len(new), (where, old, new)
        for index, (a, b) in enumerate(zip(old, new)):
            _same(a, b, f"{where}[{index}]")
    else:
        assert type(old) is type(new) and old == new, (where, old, new)


@pytest.mark.parametrize("name", [s[0] for s in scenarios()])
def test_reports_match_the_replaced_module(name):
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))[name]
    _, base, cur, settings = next(s for s in scenarios() if s[0] == name)
    report = run_gate([(f"base{i}.json", d) for i, d in enumerate(base)],
                      [(f"cur{i}.json", d) for i, d in enumerate(cur)], GateSettings(**settings))
    assert to_markdown(report) == golden["markdown"]
    assert to_junit(report) == golden["junit"]
    _same(golden["json"], json.loads(json.dumps(report.to_dict())))
