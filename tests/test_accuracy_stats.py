"""Accuracy statistics: Wilson intervals of a top-1, McNemar's test and Newcombe's interval for two models on the
same images, and the fields they add to evaluate's JSON, the quantization gate and the prune report.

Known values: Wilson intervals from Newcombe, "Two-sided confidence intervals for the single proportion:
comparison of seven methods", Statistics in Medicine 17:857-872 (1998), Table I (method 3); the paired example
of Cavo et al. (2012) from Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" (2017),
chapter 8, as the contingencytables R package's tests print it (Newcombe square-and-add -0.0621, 95 % CI
-0.1186 to -0.0046). p-values are checked against a brute-force binomial sum (math.comb), not scipy.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import write_digits_folder
from edgeresnet.evaluate import evaluate_logits, format_accuracy, paired
from edgeresnet.evaluate.intervals import accuracy_interval, wilson_interval, z_value


def _brute_exact_p(b: int, c: int) -> float:
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def _brute_mid_p(b: int, c: int) -> float:
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    return min(1.0, (2 * sum(math.comb(n, i) for i in range(k + 1)) - math.comb(n, k)) / 2 ** n)


@pytest.mark.parametrize("x, n, lower, upper", [
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)])
def test_wilson_matches_newcombe_table(x, n, lower, upper):
    interval = wilson_interval(x, n)
    assert round(interval.lower, 4) == lower and round(interval.upper, 4) == upper
    assert interval.estimate == x / n and interval.method == "wilson"


@pytest.mark.parametrize("x, n", [(0, 1), (1, 1), (0, 50), (50, 50), (7, 10), (9990, 10000)])
def test_wilson_bounds_are_where_the_score_statistic_is_z(x, n):
    """The Wilson interval is {p : (x - n p)^2 <= z^2 n p (1 - p)}; its finite bounds solve it with equality."""
    z = z_value(0.95)
    interval = wilson_interval(x, n)
    assert 0.0 <= interval.lower <= x / n <= interval.upper <= 1.0
    for bound, at_edge in ((interval.lower, x == 0), (interval.upper, x == n)):
        if at_edge:  # 0 correct: lower is 0; all correct: upper is 1 (no negative or >1 rounding)
            assert bound in (0.0, 1.0)
        else:
            assert (x - n * bound) ** 2 == pytest.approx(z * z * n * bound * (1 - bound), rel=1e-9)
    assert wilson_interval(0, n).lower == 0.0 and wilson_interval(n, n).upper == 1.0


def test_wilson_refuses_impossible_counts():
    for x, n in ((1, 0), (-1, 5), (6, 5)):
        with pytest.raises(ValueError):
            wilson_interval(x, n)
    with pytest.raises(ValueError):
        z_value(1.0)
    assert accuracy_interval(75.0, 4).successes == 3
    assert accuracy_interval(94.133, 3000).successes == 2824  # 2824/3000 = 94.1333 %, rounded to 3 decimals
    for top in (110.0, 62.0):  # above 100 %, and 2.48 of 4 images
        with pytest.raises(ValueError):
            accuracy_interval(top, 4)


def test_format_accuracy():
    assert format_accuracy(94.1234, [93.61, 94.58]) == "94.1 % [93.6, 94.6]"
    assert format_accuracy(94.1234) == "94.1 %" and format_accuracy(None) == "-"


@pytest.mark.parametrize("b, c", [(0, 0), (0, 1), (1, 0), (5, 5), (6, 16), (16, 6), (0, 12), (40, 25), (3, 200)])
def test_mcnemar_exact_and_mid_p_match_brute_force(b, c):
    assert paired.mcnemar_exact_p(b, c) == pytest.approx(_brute_exact_p(b, c), rel=1e-12, abs=1e-15)
    assert paired.mcnemar_mid_p(b, c) == pytest.approx(_brute_mid_p(b, c), rel=1e-12, abs=1e-15)
    assert paired.mcnemar_mid_p(b, c) <= paired.mcnemar_exact_p(b, c) <= 1.0


def test_mcnemar_edge_cases_and_textbook_value():
    assert paired.mcnemar_exact_p(0, 0) == 1.0 and paired.mcnemar_mid_p(0, 0) == 1.0  # no discordant images: no evidence
    assert paired.mcnemar_exact_p(5, 5) == 1.0
    # Cavo et al. (2012), b = 6, c = 16: exact conditional p 0.052, mid-p 0.035 (Fagerland et al. 2017, ch. 8)
    assert round(paired.mcnemar_exact_p(6, 16), 3) == 0.052 and round(paired.mcnemar_mid_p(6, 16), 3) == 0.035
    assert paired.mcnemar_exact_p(0, 6) == pytest.approx(2 / 64)  # the smallest all-one-way count below 5 %
    with pytest.raises(ValueError):
        paired.mcnemar_exact_p(-1, 3)


def test_newcombe_interval_textbook_and_edges():
    lo, hi = paired.newcombe_interval(59, 6, 16, 80)
    assert (round(lo, 4), round(hi, 4)) == (-0.1186, -0.0046)
    lo, hi = paired.newcombe_interval(10, 0, 0, 0)  # b + c = 0, every image right for both: wide, centred on 0
    assert lo < 0 < hi and lo == pytest.approx(-hi)
    lo, hi = paired.newcombe_interval(0, 0, 0, 10)  # both models wrong everywhere
    assert lo < 0 < hi
    lo, hi = paired.newcombe_interval(0, 10, 0, 0)  # the reference right everywhere, the candidate nowhere
    assert hi == pytest.approx(1.0) and 0.6 < lo < 1.0
    with pytest.raises(ValueError):
        paired.newcombe_interval(0, 0, 0, 0)


def test_compare_outcomes_counts_the_discordant_images():
    reference = np.array([True] * 90 + [False] * 10)
    candidate = reference.copy()
    candidate[:12] = False  # 12 images the candidate loses
    candidate[95:] = True  # 5 it gains
    result = paired.compare_outcomes(reference, candidate)
    assert (result.both_correct, result.only_reference, result.only_candidate, result.both_wrong) == (78, 12, 5, 5)
    assert result.reference_top1 == 90.0 and result.candidate_top1 == 83.0 and result.drop == pytest.approx(7.0)
    assert result.p_value == pytest.approx(_brute_exact_p(12, 5)) and not result.significant
    assert result.drop_ci95[0] < 7.0 < result.drop_ci95[1]
    data = result.to_dict()
    assert data["test"] == "mcnemar-exact" and data["significant"] is False and data["interval_method"] == "newcombe-10"
    assert "significant at 5 %: no" in data["summary"] and "b=12, c=5" in data["summary"]
    same = paired.compare_outcomes(reference, reference)
    assert same.p_value == 1.0 and not same.significant and same.drop == 0.0
    worse = paired.compare_outcomes(reference, np.zeros(100, bool))
    assert worse.significant and "significant at 5 %: yes" in worse.summary()
    with pytest.raises(ValueError, match="same images"):
        paired.compare_outcomes(reference, reference[:50])
    with pytest.raises(TypeError):
        paired.compare_outcomes(reference.astype(int), reference)


def test_compare_logits_uses_top1_outcomes():
    labels = np.array([0, 1, 2, 0])
    a = np.eye(3)[[0, 1, 2, 1]]  # 3 right
    b = np.eye(3)[[0, 2, 2, 0]]  # 3 right, different images
    assert paired.correct_mask(a, labels).tolist() == [True, True, True, False]
    result = paired.compare_logits(a, b, labels)
    assert (result.only_reference, result.only_candidate) == (1, 1) and result.p_value == 1.0


def test_evaluate_logits_reports_intervals_next_to_top1():
    labels = np.array([0, 1, 2, 1])
    metrics = evaluate_logits(np.eye(3)[[0, 1, 2, 0]], labels)
    assert metrics["top1"] == 75.0 and metrics["top1_correct"] == 3
    interval = wilson_interval(3, 4)
    assert metrics["top1_ci95"] == [round(100 * interval.lower, 3), round(100 * interval.upper, 3)]
    assert metrics["top5_correct"] == 4 and metrics["top5_ci95"][1] == 100.0 and metrics["ci_method"] == "wilson"
    assert {"n", "num_classes", "top1", "top5", "top5_k", "loss", "macro", "weighted", "per_class", "class_names",
            "confusion_matrix"} <= set(metrics)  # every key of before stays
    perfect = evaluate_logits(np.eye(3)[[0, 1, 2]], np.array([0, 1, 2]))
    assert perfect["top1_ci95"][1] == 100.0 and perfect["top1_ci95"][0] < 100.0
    none = evaluate_logits(np.eye(3)[[1, 2, 0]], np.array([0, 1, 2]))
    assert none["top1_ci95"][0] == 0.0 and none["top1_ci95"][1] > 0.0


def test_quantization_gate_states_the_paired_test():
    """run_gate (PTQ and QAT) carries McNemar's test of the final artifact against FP32 in its JSON and message."""
    from edgeresnet.compress.sensitivity import run_gate

    labels = np.arange(200) % 4
    fp32 = np.eye(4)[labels] * 5.0
    int8 = fp32.copy()
    int8[:8] = np.eye(4)[(labels[:8] + 1) % 4] * 5.0  # 8 images lost, none gained

    gate = run_gate(["conv1"], lambda keep: fp32 if keep else int8, fp32, labels, max_drop=5.0)
    assert gate.passed and gate.paired is not None
    assert gate.paired["only_reference_correct"] == 8 and gate.paired["only_candidate_correct"] == 0
    assert gate.paired["p_value"] == pytest.approx(_brute_exact_p(8, 0)) and gate.paired["significant"] is True
    assert "drop 4.00 pt within 5" in gate.message and "significant at 5 %: yes" in gate.message
    assert gate.to_dict()["paired"]["significant"] is True

    strict = run_gate(["conv1"], lambda keep: fp32 if keep else int8, fp32, labels, max_drop=1.0)
    assert strict.passed and strict.kept_float == ["conv1"] and "significant at 5 %: no" in strict.message
    assert strict.paired["p_value"] == 1.0 and strict.steps[0]["significant"] is False


def test_report_cells_show_the_interval():
    from edgeresnet.report import compare

    row = {"top1": 94.1, "top1_ci95": compare._ci95(94.1, 1000), "top5": None}
    assert compare.cell(row, "top1") == "94.1 % [92.5, 95.4]" and compare.cell(row, "top5") == "-"
    assert compare._ci95(94.1, None) is None


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """A small ImageFolder of real digits (6 per class) and an untrained 10-class checkpoint."""
    torch = pytest.importorskip("torch")

    from edgeresnet.data import load_data
    from edgeresnet.models import ModelSpec, build_model, make_checkpoint

    root = tmp_path_factory.mktemp("accuracy_stats")
    folder = root / "digits6"
    write_digits_folder(folder, 6)
    preprocess = load_data("digits", 32).preprocess.to_dict()
    torch.manual_seed(0)
    spec = ModelSpec("resnet18", 10)
    path = root / "model.pt"
    torch.save(make_checkpoint(build_model(spec).eval(), spec, preprocess), path)
    return {"root": root, "data": str(folder), "model": path}


def test_prune_report_carries_the_paired_test(tiny_world, capsys, torch_single_thread):
    from edgeresnet.cli.main import main

    out = tiny_world["root"] / "pruned.pt"
    with pytest.raises(SystemExit) as info:
        main(["prune", str(tiny_world["model"]), "--out", str(out), "--ratio", "0.5", "--data", tiny_world["data"],
              "--finetune-epochs", "0", "--exporter", "torchscript", "--json", "-"])
    stdout, err = capsys.readouterr()
    assert int(info.value.code or 0) == 0, err
    acc = json.loads(stdout)["accuracy"]
    counts = acc["paired"]
    n = counts["n"]
    assert n == json.loads(stdout)["test_images"]
    assert counts["both_correct"] + counts["only_reference_correct"] == round(acc["before"] * n / 100)
    assert counts["both_correct"] + counts["only_candidate_correct"] == round(acc["after"] * n / 100)
    assert counts["drop"] == pytest.approx(acc["drop"], abs=1e-3)
    assert acc["p_value"] == pytest.approx(_brute_exact_p(counts["only_reference_correct"],
                                                          counts["only_candidate_correct"]))
    assert acc["significant"] is (acc["p_value"] < 0.05) and len(acc["before_ci95"]) == 2
    assert acc["before_ci95"][0] <= acc["before"] <= acc["before_ci95"][1]
    assert Path(out).exists()


def test_evaluate_json_carries_intervals(tiny_world, tmp_path, capsys, torch_single_thread):
    from edgeresnet.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["evaluate", str(tiny_world["model"]), "--data", tiny_world["data"], "--split", "all", "--no-plot",
              "--out", str(tmp_path), "--json", "-"])
    stdout, err = capsys.readouterr()
    assert int(info.value.code or 0) == 0, err
    metrics = json.loads(stdout)
    assert metrics["n"] == 60 and {"top1", "top5", "confusion_matrix", "outputs"} <= set(metrics)
    expected = wilson_interval(metrics["top1_correct"], 60)
    assert metrics["top1_ci95"] == expected.percent() and metrics["top1"] == pytest.approx(100 * expected.estimate)
    written = json.loads(next(tmp_path.glob("*-metrics.json")).read_text())
    assert written["top1_ci95"] == metrics["top1_ci95"] and written["top5_ci95"] == metrics["top5_ci95"]
