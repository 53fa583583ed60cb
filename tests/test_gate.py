"""Regression gate core: statistics against hand-computed values, verdicts, pairing, environments, reports."""

from __future__ import annotations

import itertools
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from edgeresnet.bench import stats as bench_stats
from edgeresnet.errors import UserError
from edgeresnet.gate import (
    EXIT_PASS,
    EXIT_REGRESSION,
    GateSettings,
    compare_accuracy,
    compare_latency,
    parse_fraction,
    run_gate,
    to_junit,
    to_markdown,
)
from edgeresnet.gate.stats import (
    _rows_metric,
    bootstrap_ratio,
    mann_whitney_hodges_lehmann,
    metric_value,
    rankdata,
    split_blocks,
    u_distribution,
)

CPU_ENV = {"host": {"cpu": "AMD EPYC", "cores": 2, "machine": "x86_64", "system": "Linux"},
           "versions": {"onnxruntime": "1.32.0"}, "gpu": None, "jetson": None, "target": "cpu",
           "power_mode": None, "tensorrt": None}
ORIN_ENV = {"host": {"cpu": "ARMv8 Processor rev 1 (v8l)", "cores": 6, "machine": "aarch64", "system": "Linux"},
            "versions": {"tensorrt": "10.3.0"}, "gpu": {"name": "Orin (nvgpu)"}, "jetson": {"model": "orin-nano"},
            "target": "orin-nano", "power_mode": "15W", "tensorrt": "10.3.0"}


def lognormal(seed: int, n: int = 300, scale: float = 1.0, sigma: float = 0.05, median_ms: float = 10.0) -> list[float]:
    rng = np.random.default_rng(seed)
    return (median_ms * scale * np.exp(rng.normal(0.0, sigma, n))).tolist()


def result(samples: list[float], model: str = "resnet18", top1: float | None = 95.0, **key: object) -> dict:
    """A benchmark result as `edgeresnet benchmark` writes it (statistics from the bench helper's module)."""
    out = {"model": model, "artifact": f"{model}.onnx", "artifact_sha256": "", "target": "cpu", "backend": "ort",
           "precision": "fp32", "batch": 1, "latency_ms": bench_stats.summarize(samples, resamples=200),
           "throughput_ips": 1000.0 / float(np.median(samples)), "iterations": len(samples), "duration_s": 3.0,
           "gpu_compute_ms": None, "h2d_ms": None, "d2h_ms": None,
           "accuracy": None if top1 is None else {"top1": top1, "top5": 99.0, "n": 360}, "warnings": []}
    out.update(key)
    return out


def document(*results: dict, env: dict | None = None) -> dict:
    return {"schema": "edgeresnet.benchmark/1", "created": "2026-01-01T00:00:00+00:00",
            "tool": {"edgeresnet": "0.1.0"}, "environment": env or CPU_ENV, "results": list(results)}


# -- statistics --------------------------------------------------------------------------------------


def test_u_distribution_matches_hand_enumeration():
    # m = n = 2: the 6 orderings give U = 0, 1, 2, 2, 3, 4
    assert u_distribution(2, 2) == (1, 1, 2, 1, 1)
    # m = 1: U is uniform on 0..n
    assert u_distribution(1, 4) == (1, 1, 1, 1, 1)
    counts = u_distribution(7, 9)
    assert sum(counts) == math.comb(16, 7) and counts == counts[::-1] and len(counts) == 64


def test_rankdata_averages_ties():
    ranks, ties = rankdata(np.array([3.0, 1.0, 2.0, 2.0, 3.0, 3.0]))
    assert ranks.tolist() == [5.0, 1.0, 2.5, 2.5, 5.0, 5.0]
    assert sorted(ties.tolist()) == [1, 2, 3]


def test_mann_whitney_exact_and_hodges_lehmann_by_hand():
    # y - x differences: 1,2,2,3,3,3,4,4,5 -> HL shift 3; U = 9 (every y above every x); P(U = 9) = 1/20
    test = mann_whitney_hodges_lehmann([1, 2, 3], [4, 5, 6], confidence=0.95)
    assert test.exact and test.u == 9.0 and test.shift == 3.0
    assert test.p_value == pytest.approx(0.1)
    assert test.ci == (-math.inf, math.inf)  # P(U = 0) = 0.05 > 0.025: three values cannot give a 95 % interval
    test90 = mann_whitney_hodges_lehmann([1, 2, 3], [4, 5, 6], confidence=0.90)
    assert test90.ci == (1.0, 5.0)  # C = 1: smallest and largest difference


def test_moses_interval_uses_tabulated_critical_value():
    # m = n = 5, 95 %: P(U <= 2) = 4/252 <= 0.025 < P(U <= 3) = 7/252, so C = 3 (Hollander & Wolfe table)
    x = [0.0, 10.0, 20.0, 30.0, 40.0]
    y = [1.0, 12.0, 23.0, 34.0, 45.0]
    diffs = sorted(b - a for a in x for b in y)
    test = mann_whitney_hodges_lehmann(x, y)
    assert test.ci == (diffs[2], diffs[22])
    assert test.shift == float(np.median(diffs))


def test_mann_whitney_normal_approximation_with_ties_by_hand():
    # ranks of y: 3, 6, 6, 8 -> 23, U = 23 - 10 = 13; tie groups 1,3,3,1 -> sum(t^3 - t) = 48
    # var = 16/12 * (9 - 48/56) = 10.857142857; z = (13 - 8 - 0.5) / sqrt(var) = 1.365698
    test = mann_whitney_hodges_lehmann([1, 2, 2, 3], [2, 3, 3, 4])
    assert not test.exact and test.u == 13.0
    z = 4.5 / math.sqrt(16 / 12 * (9 - 48 / 56))
    assert z == pytest.approx(1.365698, abs=1e-6)
    # two-sided normal tail at z = 1.365698 (tables: 0.1738 at 1.36, 0.1707 at 1.37, interpolated 0.1720)
    assert test.p_value == pytest.approx(0.172034, abs=1e-5)


def test_large_samples_select_order_statistics_without_the_matrix(monkeypatch):
    rng = np.random.default_rng(8)
    x = np.round(rng.normal(size=400), 2)  # ties on purpose
    y = np.round(rng.normal(0.3, size=300), 2)
    full = mann_whitney_hodges_lehmann(x, y)
    monkeypatch.setattr("edgeresnet.gate.stats.MAX_MATRIX_PAIRS", 0)
    selected = mann_whitney_hodges_lehmann(x, y)
    # the same order statistics; equal differences of different pairs may differ in the last bit
    assert selected.shift == pytest.approx(full.shift, abs=1e-12)
    assert selected.ci == pytest.approx(full.ci, abs=1e-12)


def test_mann_whitney_agrees_with_scipy():
    from scipy import stats as scipy_stats

    rng = np.random.default_rng(3)
    for m, n in ((4, 6), (12, 15), (30, 40), (70, 80)):
        x = rng.normal(size=m)
        y = rng.normal(0.4, size=n)
        ours = mann_whitney_hodges_lehmann(x, y)
        assert ours.exact == (m * n <= 2500)
        ref = scipy_stats.mannwhitneyu(y, x, alternative="two-sided",
                                       method="exact" if m * n <= 2500 else "asymptotic")
        assert ours.u == ref.statistic
        assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9)
        # ties: the normal form with tie and continuity correction, whatever the sizes
        tied = mann_whitney_hodges_lehmann(np.round(x, 1), np.round(y, 1))
        ref = scipy_stats.mannwhitneyu(np.round(y, 1), np.round(x, 1), method="asymptotic", use_continuity=True)
        assert not tied.exact and tied.u == ref.statistic
        assert tied.p_value == pytest.approx(ref.pvalue, rel=1e-9)


def _brute_force_hodges_lehmann(x: list[float], y: list[float], confidence: float) -> tuple[float, tuple]:
    """HL shift and Moses interval from all m * n differences; C from the enumerated U null distribution when
    there are no ties (every placement of the y's among the m + n ranks), else the tie-corrected normal form."""
    from scipy import stats as scipy_stats

    m, n = len(x), len(y)
    diffs = sorted(b - a for a in x for b in y)
    mn, total, alpha = m * n, m + n, 1.0 - confidence
    ties = np.unique(np.asarray(x + y), return_counts=True)[1]
    if ties.max() == 1:
        counts = [0] * (mn + 1)
        for positions in itertools.combinations(range(total), n):  # 0-based ranks of the y's
            counts[sum(positions) - n * (n - 1) // 2] += 1  # U = number of (x below y) pairs
        c, acc = 0, 0
        for u, count in enumerate(counts):
            acc += count
            if acc / math.comb(total, n) > alpha / 2.0 + 1e-12:
                break
            c = u + 1
    else:
        var = mn / 12.0 * ((total + 1) - float(np.sum(ties.astype(float) ** 3 - ties)) / (total * (total - 1)))
        c = int(math.floor(mn / 2.0 - 0.5 - scipy_stats.norm.ppf(1.0 - alpha / 2.0) * math.sqrt(var))) + 1
    ci = (diffs[c - 1], diffs[mn - c]) if c >= 1 else (-math.inf, math.inf)
    return float(np.median(diffs)), ci


@pytest.mark.parametrize("matrix", [True, False], ids=["all-differences", "bisection"])
def test_hodges_lehmann_interval_agrees_with_brute_force(monkeypatch, matrix):
    if not matrix:
        monkeypatch.setattr("edgeresnet.gate.stats.MAX_MATRIX_PAIRS", 0)
    rng = np.random.default_rng(11)
    for m, n in ((3, 4), (5, 6), (7, 8), (8, 9)):
        for confidence in (0.8, 0.9, 0.95, 0.99):
            for x, y in ((rng.normal(size=m), rng.normal(0.5, size=n)),  # no ties: exact
                         (np.round(rng.normal(size=m), 0), np.round(rng.normal(0.5, size=n), 0))):  # ties: normal
                ours = mann_whitney_hodges_lehmann(x, y, confidence)
                shift, ci = _brute_force_hodges_lehmann(x.tolist(), y.tolist(), confidence)
                assert ours.shift == pytest.approx(shift, abs=1e-12)
                assert ours.ci == pytest.approx(ci, abs=1e-12)


def test_metric_value_uses_the_result_file_definitions():
    values = [float(v) for v in range(1, 101)]
    assert metric_value(values, "median") == 50.5
    assert metric_value(values[:-1], "median") == 50.0
    ordered = sorted(values)
    assert metric_value(values, "p90") == bench_stats.percentile(ordered, 90) == 90.0
    assert metric_value(values, "p99") == bench_stats.percentile(ordered, 99) == 100.0  # trtexec: p99 of 100 = max
    rows = np.random.default_rng(0).random((5, 37))
    for metric in ("median", "p90", "p99"):
        assert _rows_metric(rows.copy(), metric).tolist() == [metric_value(r, metric) for r in rows]


def test_blocks_are_contiguous_and_never_cross_runs():
    runs = [np.arange(10.0), np.arange(100.0, 107.0)]
    blocks = split_blocks(runs, 3)
    assert [b.tolist() for b in blocks] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9], [100, 101, 102, 103], [104, 105, 106]]


def test_bootstrap_is_seeded_and_exact_for_a_pure_scale_change():
    base = [np.asarray(lognormal(1, 200))]
    cur = [base[0] * 1.2]
    a = bootstrap_ratio(base, cur, "p99", 10, resamples=500, seed=7)
    b = bootstrap_ratio(base, cur, "p99", 10, resamples=500, seed=7)
    assert a == b and a.ratio == pytest.approx(1.2)
    constant = bootstrap_ratio([np.full(50, 4.0)], [np.full(50, 5.0)], "median", 5, resamples=300)
    assert constant.ci == (1.25, 1.25) and constant.p_value < 0.01


# -- latency verdicts --------------------------------------------------------------------------------


def test_same_distribution_passes():
    cmp = compare_latency([lognormal(1)], [lognormal(2)], GateSettings())
    assert cmp.verdict == "pass" and abs(cmp.change) < 0.02
    assert cmp.ci[0] < cmp.change < cmp.ci[1]


def test_twenty_percent_slowdown_is_a_regression():
    cmp = compare_latency([lognormal(1)], [lognormal(2, scale=1.2)], GateSettings())
    assert cmp.verdict == "regression" and cmp.significant
    assert cmp.ci[0] < 0.2 < cmp.ci[1] and cmp.change == pytest.approx(0.2, abs=0.03)
    assert "above the 5.0% tolerance" in cmp.reason and "on log samples" in cmp.method
    assert cmp.n_baseline == 300 and cmp.block_length == 1
    blocked = compare_latency([lognormal(1)], [lognormal(2, scale=1.2)], GateSettings(blocks=20))
    assert blocked.blocks_baseline == 20 and blocked.block_length == 15 and blocked.verdict == "regression"


def test_twenty_percent_speedup_is_an_improvement():
    cmp = compare_latency([lognormal(1)], [lognormal(2, scale=0.8)], GateSettings())
    assert cmp.verdict == "improvement" and cmp.change == pytest.approx(-0.2, abs=0.03)


def test_significant_but_small_slowdown_passes_and_tolerance_zero_fails_it():
    base, cur = [lognormal(1, 2000, sigma=0.02)], [lognormal(2, 2000, scale=1.02, sigma=0.02)]
    cmp = compare_latency(base, cur, GateSettings())
    assert cmp.verdict == "pass" and cmp.significant and "within the 5.0% tolerance" in cmp.reason
    assert compare_latency(base, cur, GateSettings(tolerance=0.0)).verdict == "regression"


def test_large_but_noisy_change_is_not_significant():
    cmp = compare_latency([lognormal(1, 12, sigma=0.4)], [lognormal(2, 12, scale=1.1, sigma=0.4)], GateSettings())
    assert cmp.verdict == "pass" and not cmp.significant
    assert any("the gate asks for 50" in n for n in cmp.notes)


def test_p99_bootstrap_catches_a_tail_only_regression():
    rng = np.random.default_rng(5)
    base = lognormal(1, 3000, sigma=0.03)
    cur = np.asarray(lognormal(2, 3000, sigma=0.03))
    cur[rng.random(3000) < 0.05] *= 1.5  # 5 % of iterations stall: median unchanged, p99 much worse
    settings = GateSettings(metric="p99", resamples=500)
    tail = compare_latency([base], [cur.tolist()], settings)
    assert tail.verdict == "regression" and tail.change > 0.3 and "bootstrap" in tail.method
    assert compare_latency([base], [cur.tolist()], GateSettings()).verdict == "pass"  # the median does not see it


def test_repeated_runs_are_pooled_and_blocks_stay_inside_runs():
    base = [lognormal(1, 100), lognormal(2, 100), lognormal(3, 100)]
    cur = [lognormal(4, 100, scale=1.15), lognormal(5, 100, scale=1.15), lognormal(6, 100, scale=1.15)]
    cmp = compare_latency(base, cur, GateSettings())
    assert cmp.n_baseline == 300 and cmp.verdict == "regression"
    blocked = compare_latency(base, cur, GateSettings(blocks=20))
    assert blocked.blocks_baseline == 21 and blocked.verdict == "regression"  # 7 blocks of ~15 per 100-sample run


def test_noisy_machine_is_named_in_the_notes():
    steady = lognormal(1, 200)
    jumpy = lognormal(2, 200)[:100] + lognormal(3, 100, scale=1.3)  # the machine slowed down half way
    cmp = compare_latency([steady], [jumpy], GateSettings())
    assert any("speed changed during current run: its second half is +30%" in n for n in cmp.notes)
    runs = compare_latency([lognormal(4, 100), lognormal(5, 100, scale=1.2)], [lognormal(6, 100)], GateSettings())
    assert any(n.startswith("the baseline runs disagree among themselves by 19% (run medians") for n in runs.notes)
    assert not compare_latency([steady], [lognormal(7, 200)], GateSettings()).notes


# -- accuracy ----------------------------------------------------------------------------------------


def test_accuracy_drop_beyond_the_budget_fails():
    assert compare_accuracy({"top1": 95.0, "n": 360}, {"top1": 94.4, "n": 360}, 0.5).verdict == "regression"
    assert compare_accuracy({"top1": 95.0, "n": 360}, {"top1": 94.5, "n": 360}, 0.5).verdict == "pass"
    assert compare_accuracy({"top1": 95.0, "n": 360}, {"top1": 97.0, "n": 360}, 0.5).drop == pytest.approx(-2.0)
    assert compare_accuracy({"top1": 95.0, "n": 360}, None, 0.5).verdict == "missing"
    assert compare_accuracy(None, {"top1": 90.0, "n": 360}, 0.5).verdict == "not measured"
    assert "different image counts" in compare_accuracy({"top1": 95.0, "n": 360}, {"top1": 95.0, "n": 100}, 0.5).reason


# -- the gate ----------------------------------------------------------------------------------------


def _gate(base: list[dict], cur: list[dict], **settings: object):
    return run_gate([(f"base{i}.json", d) for i, d in enumerate(base)],
                    [(f"cur{i}.json", d) for i, d in enumerate(cur)], GateSettings(**settings))


def test_gate_pairs_by_key_and_reports_missing_and_new():
    base = document(result(lognormal(1)), result(lognormal(2), model="resnet50"))
    cur = document(result(lognormal(3)), result(lognormal(4), model="resnet18", batch=8))
    report = _gate([base], [cur])
    by_status = {r.status: r for r in report.rows}
    assert by_status["compared"].key == ("resnet18", "cpu", "ort", "fp32", 1)
    assert by_status["missing"].key[0] == "resnet50" and by_status["missing"].verdict == "missing"
    assert by_status["new"].key == ("resnet18", "cpu", "ort", "fp32", 8)
    assert report.failed and report.exit_code == EXIT_REGRESSION and "1 missing, 1 new" in report.summary()
    allowed = _gate([base], [cur], allow_missing=True)
    assert not allowed.failed and allowed.exit_code == EXIT_PASS


def test_gate_regression_improvement_and_accuracy_drop_per_key():
    base = document(result(lognormal(1)), result(lognormal(2), model="fast"), result(lognormal(3), model="acc"))
    cur = document(result(lognormal(4, scale=1.25)), result(lognormal(5, scale=0.7), model="fast"),
                   result(lognormal(6), model="acc", top1=93.0))
    verdicts = {r.key[0]: r.verdict for r in _gate([base], [cur]).rows}
    assert verdicts == {"resnet18": "regression", "fast": "improvement", "acc": "regression"}


def test_gate_refuses_other_environments_and_says_what_differs():
    orin_15w = document(result(lognormal(1), target="orin-nano", backend="trt"), env=ORIN_ENV)
    other = dict(ORIN_ENV, power_mode="7W", tensorrt="8.6.2", gpu={"name": "Xavier"})
    orin_7w = document(result(lognormal(2), target="orin-nano", backend="trt"), env=other)
    with pytest.raises(UserError) as info:
        _gate([orin_15w], [orin_7w])
    message = str(info.value)
    assert "GPU 'Orin (nvgpu)' vs 'Xavier'" in message and "TensorRT '10.3.0' vs '8.6.2'" in message
    assert "power mode '15W' vs '7W'" in message and "--allow-env-change" in message
    assert "target" not in message.split("environments differ:")[1].split(";")[0]
    report = _gate([orin_15w], [orin_7w], allow_env_change=True)
    assert report.environment.differences and not report.failed


def test_gate_input_errors():
    base = document(result(lognormal(1)))
    with pytest.raises(UserError, match="no result in the current run matches"):
        _gate([base], [document(result(lognormal(2), model="other"))])
    with pytest.raises(UserError, match="two results share the key"):
        _gate([base], [document(result(lognormal(2)), result(lognormal(3)))])
    empty = result(lognormal(2))
    empty["latency_ms"]["samples"] = []
    with pytest.raises(UserError, match="no raw latency samples"):
        _gate([base], [document(empty)])


def test_parse_fraction_and_settings():
    assert parse_fraction("5%", "--tolerance") == pytest.approx(0.05)
    assert parse_fraction("0.05", "--tolerance") == 0.05
    with pytest.raises(UserError, match="ambiguous"):
        parse_fraction("5", "--tolerance")
    with pytest.raises(UserError, match="not a number"):
        parse_fraction("five", "--tolerance")
    with pytest.raises(UserError, match="--metric p50"):
        GateSettings(metric="p50").validate()
    with pytest.raises(UserError, match="--confidence"):
        GateSettings(confidence=0.2).validate()


def test_markdown_and_junit_reports():
    base = document(result(lognormal(1)), result(lognormal(2), model="resnet50"))
    cur = document(result(lognormal(3, scale=1.3)), result(lognormal(4), model="resnet50"),
                   result(lognormal(5), model="new"))
    report = _gate([base], [cur])
    md = to_markdown(report)
    assert md.startswith("### edgeresnet regression gate FAILED")
    assert "| resnet18 cpu/ort/fp32/b1 | median" in md and "**REGRESSION**" in md
    root = ET.fromstring(to_junit(report))
    suite = root.find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "1" and suite.get("skipped") == "1"
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("classname") for c in failed] == ["edgeresnet.regress.resnet18"]
    data = report.to_dict()
    assert data["verdict"] == "fail" and data["exit_code"] == 1 and data["results"][0]["latency"]["ci"][0] > 0
