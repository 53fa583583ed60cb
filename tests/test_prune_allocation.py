"""Channel allocation: global ranking across the network, and latency-aware pruning against a measured table.

The latency tests time real ONNX Runtime sessions on a tiny ResNet-18 (16 px, one width step), so the table
takes seconds; they assert that the speedup was measured and reported, never a speed threshold (the machine is
shared and noisy).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import write_digits_folder
from edgeresnet.compress import latency_table
from edgeresnet.compress.allocation import candidate_widths, latency_plans, parse_grid
from edgeresnet.compress.latency_table import ConvShape, LatencyTable, machine_key
from edgeresnet.compress.prune import PruneSettings, prune_model
from edgeresnet.errors import UserError
from edgeresnet.models import ModelSpec, build_model, make_checkpoint

pytestmark = pytest.mark.usefixtures("torch_single_thread")

FAST = {"width_grid": (0.25, 0.5), "table_duration_s": 0.01, "latency_rounds": 1, "latency_duration_s": 0.05,
        "latency_threads": 1}


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelSpec("resnet18", 10)).eval()


def _group(result, producer: str):
    return next(g for g in result.graph.groups if producer in g.producers)


def _assert_coupled(result):
    widths = {n: m.weight.shape for n, m in result.model.named_modules()
              if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d))}
    for group in result.graph.groups:  # every conv/bn of a group keeps the same channels, consumers agree
        outs = {widths[p][0] for p in group.producers} | {widths[n][0] for n in group.norms}
        ins = {widths[c][1] for c, _kind in group.consumers}
        assert outs == ins and len(outs) == 1, group.producers


# -- global -----------------------------------------------------------------------------------------------
def test_default_allocation_is_still_uniform():
    assert PruneSettings(ratio=0.5).allocation == "uniform"
    assert PruneSettings(speedup=1.3).allocation == "latency"  # a latency target implies latency allocation
    default = prune_model(_model(), PruneSettings(ratio=0.5), 32)
    explicit = prune_model(_model(), PruneSettings(ratio=0.5, allocation="uniform"), 32)
    assert [p.keep for p in default.plan.groups] == [p.keep for p in explicit.plan.groups]
    assert {len(p.keep) / p.channels for p in default.plan.groups} == {0.5}


def test_global_allocation_prunes_unevenly_and_keeps_residual_groups_coupled():
    model = _model()
    flat, weak = "layer3.0.conv1", ("layer4.0.conv2", "layer4.0.downsample.0", "layer4.1.conv2")
    with torch.no_grad():
        w = model.get_submodule(flat).weight  # all filters equally strong: every normalised score is 1
        w.copy_(torch.ones_like(w))
        for name in weak:  # the residual-coupled layer4 group: channels 256.. weak in all three producers
            model.get_submodule(name).weight[256:] *= 0.05
    result = prune_model(model, PruneSettings(ratio=0.5, allocation="global"), 32)
    kept = {p.index: len(p.keep) for p in result.plan.groups}
    total = sum(p.channels for p in result.plan.groups)
    assert sum(kept.values()) <= 0.5 * total  # the network-wide budget holds
    assert len({kept[p.index] / p.channels for p in result.plan.groups}) > 3  # layers pruned unevenly
    assert kept[_group(result, flat).index] == 256  # uniform would cut it to 128
    weak_group = _group(result, weak[0])
    assert set(weak) <= set(weak_group.producers)  # still one coupled group
    weak_plan = next(p for p in result.plan.groups if p.index == weak_group.index)
    assert set(weak_plan.keep) <= set(range(256))  # only strong channels survive, in all three producers
    _assert_coupled(result)
    assert result.summary()["settings"]["allocation"] == "global" and result.summary()["ratio_used"] is None


def test_global_flops_target_is_met_and_counted():
    result = prune_model(_model(), PruneSettings(flops=0.5, allocation="global"), 32)
    assert 0.45 <= result.after.macs / result.before.macs <= 0.5
    assert result.plan.estimated_macs == result.after.macs
    _assert_coupled(result)
    with pytest.raises(UserError, match="unreachable"):
        prune_model(_model(), PruneSettings(flops=0.01, min_filters=64, allocation="global"), 32)


@pytest.mark.parametrize("kwargs, fragment", [
    ({"ratio": 0.5, "allocation": "best"}, "--allocation best"),
    ({"threshold": 0.5, "allocation": "global"}, "--threshold"),
    ({"allocation": "latency"}, "--speedup S"),
    ({"speedup": 0.5}, "--speedup 0.5: must be above 1"),
    ({"speedup": 1.0}, "--speedup 1: must be above 1"),
    ({"latency_ms": -2.0}, "--latency-ms -2"),
    ({"speedup": 1.3, "latency_ms": 2.0}, "alternatives"),
    ({"speedup": 1.3, "ratio": 0.5}, "--ratio and --speedup are alternatives"),
    ({"speedup": 1.3, "allocation": "uniform"}, "needs --allocation latency"),
    ({"speedup": 1.3, "latency_backend": "trt-orin"}, "--latency-backend trt-orin"),
    ({"speedup": 1.3, "width_grid": (1.5,)}, "--width-grid 1.5"),
])
def test_bad_allocation_settings_are_one_line_user_errors(kwargs, fragment):
    with pytest.raises(UserError) as info:
        PruneSettings(**kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_width_grid_parsing():
    assert parse_grid("0.75, 0.25,0.5") == (0.25, 0.5, 0.75)
    for bad in ("", "a,b", "0,0.5", "1"):
        with pytest.raises(UserError, match="--width-grid"):
            parse_grid(bad)
    assert candidate_widths(64, (0.25, 0.5), 8, 16) == [64, 32, 16]
    assert candidate_widths(64, (0.1,), 8, 16) == [64, 16]  # never below --min-filters


# -- latency table ----------------------------------------------------------------------------------------
SHAPES = [ConvShape(16, 16, (3, 3), (1, 1), (1, 1), 1, (8, 8)), ConvShape(16, 8, (1, 1), (2, 2), (0, 0), 1, (8, 8))]


def test_latency_table_is_cached_and_reused_without_retiming(tmp_path, monkeypatch):
    calls = []
    real = latency_table.time_conv

    def spy(shape, path, **kw):
        calls.append(shape)
        return real(shape, path, **kw)

    monkeypatch.setattr(latency_table, "time_conv", spy)
    key = machine_key("ort-cpu", 1)
    path = tmp_path / "table.json"
    first = LatencyTable.open(path, key)
    first.ensure(SHAPES, threads=1, duration_s=0.005)
    assert len(calls) == 2 and first.timed == 2 and all(first.ms(s) > 0 for s in SHAPES)
    saved = json.loads(path.read_text())
    assert saved["key"] == key and set(saved["entries"]) == {s.key() for s in SHAPES}
    assert {"cpu", "threads", "backend", "onnxruntime"} <= set(key)
    second = LatencyTable.open(path, key)
    second.ensure(SHAPES, threads=1, duration_s=0.005)
    assert len(calls) == 2 and second.timed == 0 and second.reused == 2  # nothing re-timed
    assert second.entries == first.entries


def test_latency_table_from_another_machine_or_backend_is_refused(tmp_path):
    key = machine_key("ort-cpu", 1)
    path = tmp_path / "table.json"
    for other in ({**key, "cpu": "Some Other CPU"}, {**key, "backend": "trt-orin"}, {**key, "threads": 4},
                  {**key, "onnxruntime": "0.0.1"}):
        path.write_text(json.dumps({"format": latency_table.FORMAT, "key": other, "entries": {}}))
        with pytest.raises(UserError) as info:
            LatencyTable.open(path, key)
        message = str(info.value)
        assert message.startswith(f"--latency-table {path}: measured with") and "\n" not in message
    path.write_text("{not json")
    with pytest.raises(UserError, match="not a readable latency table"):
        LatencyTable.open(path, key)
    for entries in ({"conv": "fast"}, {"conv": None}, {"conv": -1.0}, {"conv": float("nan")}):
        path.write_text(json.dumps({"format": latency_table.FORMAT, "key": key, "entries": entries}))
        with pytest.raises(UserError, match="not an edgeresnet latency table") as info:
            LatencyTable.open(path, key)
        assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="--latency-backend trt"):
        machine_key("trt", None)


def test_default_cache_path_is_per_machine_key(tmp_path, monkeypatch):
    monkeypatch.setenv(latency_table.CACHE_ENV, str(tmp_path))
    key = machine_key("ort-cpu", 1)
    assert latency_table.default_path(key).parent == tmp_path / "latency"
    assert latency_table.default_path(key) != latency_table.default_path({**key, "threads": 2})


def test_greedy_takes_least_importance_per_ms_and_says_best_when_unreachable():
    """Pure arithmetic on a hand-made table: two groups, the cheaper loss per ms goes first."""
    from edgeresnet.compress.depgraph import ChannelGroup, DependencyGraph

    graph = DependencyGraph([ChannelGroup(0, 4, producers=["a"]), ChannelGroup(1, 4, producers=["b"])], 8)
    scores = {0: torch.tensor([1.0, 0.9, 0.8, 0.7]), 1: torch.tensor([1.0, 0.2, 0.1, 0.1])}
    settings = PruneSettings(speedup=2.0, granularity=1, min_filters=1, width_grid=(0.5,))
    options = {0: [4, 2], 1: [4, 2]}

    def predict(widths):  # each group saves 2 ms at width 2
        return 10.0 - 2.0 * (widths[0] == 2) - 2.0 * (widths[1] == 2)

    one = latency_plans(graph, scores, settings, options, predict, base_ms=10.0, target_ms=8.5, what="--speedup 2")
    assert [len(p.keep) for p in one.plans] == [4, 2] and one.predicted_ms == 8.0 and one.steps == 1
    assert one.plans[1].keep == [0, 1]
    with pytest.raises(UserError) as info:
        latency_plans(graph, scores, settings, options, predict, base_ms=10.0, target_ms=5.0, what="--speedup 2")
    assert "--speedup 2: unreachable" in str(info.value) and "x1.67" in str(info.value)
    assert "\n" not in str(info.value)


def test_cost_model_multiplies_side_ratios_and_never_predicts_below_zero():
    """A conv shrunk on both sides is counted once (ratios multiply); a table summing above the measured model
    (isolated sessions each pay a call) scales the savings down instead of predicting a negative latency."""
    from edgeresnet.compress.allocation import conv_cost_model
    from edgeresnet.compress.depgraph import ChannelGroup, DependencyGraph

    graph = DependencyGraph([ChannelGroup(0, 8, producers=["a"], consumers=[("b", "conv")]),
                             ChannelGroup(1, 8, producers=["b"])], 8)
    geometry = {"a": ConvShape(3, 8, (3, 3), (1, 1), (1, 1), 1, (8, 8)),
                "b": ConvShape(8, 8, (3, 3), (1, 1), (1, 1), 1, (8, 8))}

    def conv_ms(shape):  # proportional to MACs
        return shape.cin * shape.cout / 64.0

    full = conv_ms(geometry["a"]) + conv_ms(geometry["b"])
    predict = conv_cost_model(graph, geometry, conv_ms, base_ms=full)
    assert predict({0: 8, 1: 8}) == pytest.approx(full)
    # b at half input and half output: 1/4 of its time; a at half output: 1/2 of its time
    expected = full - conv_ms(geometry["a"]) / 2 - conv_ms(geometry["b"]) * 3 / 4
    assert predict({0: 4, 1: 4}) == pytest.approx(expected)
    tight = conv_cost_model(graph, geometry, conv_ms, base_ms=full / 4)  # the model runs 4x faster than the sum
    assert 0 < tight({0: 1, 1: 1}) < full / 4


# -- latency-aware pruning end to end -----------------------------------------------------------------------
def test_speedup_target_is_planned_measured_and_reported_and_table_reused(tmp_path, monkeypatch):
    calls = []
    real = latency_table.time_conv
    monkeypatch.setattr(latency_table, "time_conv", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    table = tmp_path / "lat.json"
    settings = PruneSettings(speedup=1.3, latency_table=str(table), **FAST)
    result = prune_model(_model(), settings, 16, exporter="torchscript")
    lat = result.summary()["latency"]
    assert lat["table"]["timed_now"] == len(calls) > 0 and table.exists()
    measured = lat["measured"]
    assert measured["unpruned"]["n"] > 0 and measured["pruned"]["n"] > 0
    assert measured["speedup"] == pytest.approx(measured["unpruned"]["median_ms"] / measured["pruned"]["median_ms"],
                                                rel=1e-3)
    assert lat["predicted_speedup"] >= 1.3 and lat["target_speedup"] == 1.3 and isinstance(lat["target_met"], bool)
    assert result.after.macs < result.before.macs
    _assert_coupled(result)
    again = prune_model(_model(), settings, 16, exporter="torchscript")
    assert again.summary()["latency"]["table"]["timed_now"] == 0 and len(calls) == lat["table"]["timed_now"]
    assert again.summary()["latency"]["table"]["reused"] > 0


def test_unreachable_speedup_is_a_one_line_error_with_the_best_reached(tmp_path):
    with pytest.raises(UserError) as info:
        prune_model(_model(), PruneSettings(speedup=1000.0, latency_table=str(tmp_path / "t.json"), **FAST), 16,
                    exporter="torchscript")
    message = str(info.value)
    assert message.startswith("--speedup 1000: unreachable; the latency table predicts at best x")
    assert "\n" not in message


# -- CLI ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """A 16 px digits ImageFolder (4 images per class) and a ResNet-18 checkpoint for it."""

    from edgeresnet.data import load_data

    root = tmp_path_factory.mktemp("prune_alloc")
    folder = root / "digits4"
    write_digits_folder(folder, 4)
    torch.manual_seed(0)
    spec = ModelSpec("resnet18", 10)
    path = root / "model.pt"
    torch.save(make_checkpoint(build_model(spec).eval(), spec, load_data("digits", 16).preprocess.to_dict()), path)
    return {"root": root, "data": str(folder), "model": path}


def _cli(tiny_world, capsys, out: Path, *extra: str):
    from conftest import run_cli

    return run_cli(capsys, "prune", tiny_world["model"], "--out", out, "--data", tiny_world["data"],
                   "--bn-images", "0", "--exporter", "torchscript", "--no-progress", *extra)


def test_cli_speedup_reports_measured_speedup(tiny_world, capsys, tmp_path):
    out = tmp_path / "fast.pt"
    code, stdout, err = _cli(tiny_world, capsys, out, "--speedup", "1.3", "--width-grid", "0.5",
                             "--table-duration", "0.005", "--latency-rounds", "1", "--latency-duration", "0.05",
                             "--latency-threads", "1", "--latency-table", str(tmp_path / "t.json"), "--json", "-")
    assert code == 0, err
    report = json.loads(stdout)
    lat = report["latency"]
    assert lat["measured"]["speedup"] > 0 and lat["predicted_speedup"] >= 1.3
    assert report["settings"]["allocation"] == "latency" and report["settings"]["speedup"] == 1.3
    assert out.exists()


def test_cli_global_allocation_and_no_progress(tiny_world, capsys, tmp_path, monkeypatch):
    from edgeresnet.compress import pipeline

    seen = []
    real = pipeline.finetune_pruned
    monkeypatch.setattr(pipeline, "finetune_pruned", lambda model, splits, teacher, options, spec: (
        seen.append(options.progress) or real(model, splits, teacher, options, spec)))
    out = tmp_path / "global.pt"
    code, stdout, err = _cli(tiny_world, capsys, out, "--ratio", "0.5", "--allocation", "global", "--json", "-")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["settings"]["allocation"] == "global"
    assert len({g["kept"] / g["channels"] for g in report["groups"]}) > 1
    assert seen == [False]  # --no-progress reached the fine-tune


@pytest.mark.parametrize("extra, fragment", [
    (["--speedup", "0.5"], "--speedup 0.5: must be above 1"),
    (["--speedup", "1000", "--width-grid", "0.5", "--table-duration", "0.005", "--latency-rounds", "1",
      "--latency-duration", "0.05", "--latency-threads", "1"], "--speedup 1000: unreachable; the latency table "
                                                               "predicts at best x"),
    (["--latency-ms", "100000", "--latency-rounds", "1", "--latency-duration", "0.05", "--table-duration", "0.005",
      "--width-grid", "0.5"], "--latency-ms 100000: the unpruned model already runs in"),
    (["--ratio", "0.5", "--allocation", "fastest"], "--allocation fastest"),
    (["--speedup", "1.3", "--width-grid", "half"], "--width-grid half"),
])
def test_cli_latency_refusals_are_one_line_and_write_nothing(tiny_world, capsys, tmp_path, wide_terminal, extra,
                                                            fragment):
    from conftest import assert_one_line_error

    out = tmp_path / "refused.pt"
    code, _stdout, err = _cli(tiny_world, capsys, out, "--latency-table", str(tmp_path / "t.json"), *extra)
    assert_one_line_error(code, err, fragment)
    assert not out.exists() and not Path(str(out) + ".json").exists()
