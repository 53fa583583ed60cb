"""`edgeresnet benchmark` and `compare` end to end on a real ONNX model, plus the hostile inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeresnet.bench.schema import read_results, validate
from edgeresnet.cli.main import main

pytest_plugins = ["bench_fixtures"]  # the session fixtures assets and results_file
DATA = Path(__file__).parent / "data" / "trtexec"
FAST = ["--duration", "0.05", "--min-iterations", "3", "--warmup-ms", "0", "--warmup-iterations", "1"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_benchmark_sweep_with_accuracy(assets, tmp_path, capsys):
    out = tmp_path / "res.json"
    code, stdout, err = run(["benchmark", str(assets["onnx"]), "--batch", "1,2", "--data", str(assets["data"]),
                             "--target", "host-cpu", "--json", str(out), *FAST], capsys)
    assert code == 0, err
    document = read_results(out)  # validated against the schema on read
    results = document["results"]
    assert [r["batch"] for r in results] == [1, 2]
    for r in results:
        assert r["backend"] == "ort" and r["precision"] == "fp32" and r["target"] == "host-cpu"
        assert r["model"] == "r18" and len(r["artifact_sha256"]) == 64
        assert r["iterations"] >= 3 and len(r["latency_ms"]["samples"]) == r["iterations"]
        assert r["latency_ms"]["min"] <= r["latency_ms"]["median"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"]
        assert r["throughput_ips"] == pytest.approx(r["batch"] * r["iterations"] / r["duration_s"])
        assert r["accuracy"]["n"] == 10 and 0 <= r["accuracy"]["top1"] <= r["accuracy"]["top5"] <= 100
        assert r["gpu_compute_ms"] is None and r["latency_kind"] == "host_end_to_end"
    assert results[0]["accuracy"] == results[1]["accuracy"]  # one artifact, one accuracy
    assert document["environment"]["host"]["cores"] >= 1
    assert Path(str(out) + ".json").exists()  # sidecar manifest
    assert "median ms" in stdout and "p99 ms" in stdout and "top-1 %" in stdout


def test_json_to_stdout_stays_parseable(assets, capsys):
    code, stdout, err = run(["benchmark", str(assets["onnx"]), "--json", "-", *FAST], capsys)
    assert code == 0, err
    document = validate(json.loads(stdout))
    assert document["results"][0]["accuracy"] is None
    assert "median ms" in err  # the table went to stderr


def test_torch_checkpoint_on_cpu(assets, capsys):
    code, stdout, err = run(["benchmark", str(assets["checkpoint"]), "--json", "-", "--threads", "1", *FAST], capsys)
    assert code == 0, err
    result = json.loads(stdout)["results"][0]
    assert result["backend"] == "torch" and result["device"] == "cpu" and result["precision"] == "fp32"
    assert result["timing"]["threads"] == 1


@pytest.mark.parametrize("batch, needle", [("0", "--batch 0"), ("-4", "must be >= 1"), ("1,x", "'x' is not a whole"),
                                           ("2,2", "listed twice")])
def test_bad_batch_sizes(assets, capsys, batch, needle):
    code, _, err = run(["benchmark", str(assets["onnx"]), "--batch", batch], capsys)
    one_line_error(code, err, needle)


def test_batch_outside_the_exported_range(assets, capsys):
    code, _, err = run(["benchmark", str(assets["onnx"]), "--batch", "8", *FAST], capsys)
    one_line_error(code, err, "--batch 8", "batch 1..4")


def test_model_input_size_mismatching_data(assets, capsys):
    code, _, err = run(["benchmark", str(assets["onnx"]), "--data", str(assets["data"]), "--image-size", "48", *FAST],
                       capsys)
    one_line_error(code, err, "--image-size 48", "takes 32x32 inputs")


def test_data_with_other_classes(assets, tmp_path, capsys):
    import shutil

    data = tmp_path / "five"
    for label in range(5):
        shutil.copytree(assets["data"] / str(label), data / f"c{label}")
    code, _, err = run(["benchmark", str(assets["onnx"]), "--data", str(data), *FAST], capsys)
    one_line_error(code, err, "--data five", "has 5 classes", "trained on 10")


def test_cpu_cannot_do_device_resident_timing(assets, capsys):
    code, _, err = run(["benchmark", str(assets["checkpoint"]), "--device", "cpu", "--no-transfers", *FAST], capsys)
    one_line_error(code, err, "--no-transfers", "needs a CUDA device")
    code, _, err = run(["benchmark", str(assets["onnx"]), "--cuda-graph", *FAST], capsys)
    one_line_error(code, err, "--cuda-graph", "--backend ort")


def test_accuracy_needs_data_and_missing_model(assets, tmp_path, capsys):
    code, _, err = run(["benchmark", str(assets["onnx"]), "--accuracy"], capsys)
    one_line_error(code, err, "--accuracy", "--data")
    code, _, err = run(["benchmark", str(tmp_path / "absent.onnx")], capsys)
    one_line_error(code, err, "absent.onnx", "not found")
    code, _, err = run(["benchmark"], capsys)
    one_line_error(code, err, "MODEL")


def test_from_trtexec_log_and_times(tmp_path, capsys):
    out = tmp_path / "orin.json"
    code, stdout, err = run(["benchmark", "--from-trtexec", str(DATA / "trtexec_10.3_orin_nano.log"),
                             "--from-trtexec", str(DATA / "trtexec_10.3_orin_nano.times.json"),
                             "--target", "orin-nano", "--json", str(out)], capsys)
    assert code == 0, err
    result = read_results(out)["results"][0]
    assert result["backend"] == "trtexec" and result["target"] == "orin-nano" and result["batch"] == 8
    assert result["latency_ms"]["p99"] == 6.72534
    assert "trtexec" in stdout


def test_from_trtexec_on_a_file_that_is_not_a_trtexec_log(tmp_path, capsys):
    other = tmp_path / "build.log"
    other.write_text("[100%] Built target edgeresnet\nmake: Leaving directory '/src'\n")
    code, _, err = run(["benchmark", "--from-trtexec", str(other)], capsys)
    one_line_error(code, err, "build.log", "not a trtexec log")


def test_from_trtexec_and_model_together(assets, capsys):
    code, _, err = run(["benchmark", str(assets["onnx"]), "--from-trtexec", str(DATA / "trtexec_8.5_xavier_nx.log")],
                       capsys)
    one_line_error(code, err, "--from-trtexec", "not both")


@pytest.mark.parametrize("schema, needle", [
    ("edgeresnet.benchmark/0", "older than edgeresnet.benchmark/1"),
    ("edgeresnet.benchmark/2", "newer than edgeresnet.benchmark/1"),
    ("mlperf.loadgen/1", "unknown result schema"),
])
def test_compare_refuses_other_schema_versions(results_file, tmp_path, capsys, schema, needle):
    document = json.loads(results_file.read_text())
    document["schema"] = schema
    path = tmp_path / "old.json"
    path.write_text(json.dumps(document))
    code, _, err = run(["compare", str(path)], capsys)
    one_line_error(code, err, "old.json", needle)


def test_compare_refuses_broken_results(results_file, tmp_path, capsys):
    document = json.loads(results_file.read_text())
    document["results"][0]["batch"] = 0
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document))
    code, _, err = run(["compare", str(broken)], capsys)
    one_line_error(code, err, "broken.json", "results/0/batch")
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    code, _, err = run(["compare", str(garbage)], capsys)
    one_line_error(code, err, "garbage.json", "not valid JSON")
    no_schema = tmp_path / "plain.json"
    no_schema.write_text('{"top1": 91.0}')
    code, _, err = run(["compare", str(no_schema)], capsys)
    one_line_error(code, err, "plain.json", "no \"schema\" field")


def test_compare_table_plots_and_json(results_file, tmp_path, capsys):
    trt = tmp_path / "orin.json"
    assert run(["benchmark", "--from-trtexec", str(DATA / "trtexec_10.3_orin_nano.times.json"), "--batch", "8",
                "--precision", "int8", "--model-name", "r18", "--target", "orin-nano", "--json", str(trt)],
               capsys)[0] == 0
    plots_dir = tmp_path / "plots"
    # the sidecar manifests a glob picks up are skipped, not errors
    code, stdout, err = run(["compare", str(results_file), str(results_file) + ".json", str(trt), "--out",
                             str(plots_dir), "--json", "-"], capsys)
    assert code == 0, err
    table = json.loads(stdout)
    assert [(r["backend"], r["batch"]) for r in table["rows"]] == [("ort", 1), ("ort", 2), ("trtexec", 8)]
    assert table["pair_key"] == ["model", "target", "backend", "precision", "batch"]
    assert any("sidecar manifest" in n for n in table["notes"])
    assert table["rows"][0]["model_bytes"] > 1_000_000
    for name in ("latency_cdf.png", "pareto.png"):
        assert (plots_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "3 results from 2 files" in err


@pytest.mark.gpu
def test_torch_cuda_events_no_transfers_and_graph(assets, capsys):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    code, stdout, err = run(["benchmark", str(assets["checkpoint"]), "--device", "cuda", "--batch", "1,4",
                             "--json", "-", *FAST], capsys)
    assert code == 0, err
    for result in json.loads(stdout)["results"]:
        assert result["device"].startswith("cuda")
        assert result["gpu_compute_ms"]["n"] == result["iterations"]
        assert result["h2d_ms"] is not None and result["d2h_ms"] is not None
    code, stdout, err = run(["benchmark", str(assets["checkpoint"]), "--device", "cuda", "--no-transfers",
                             "--cuda-graph", "--json", "-", *FAST], capsys)
    assert code == 0, err
    result = json.loads(stdout)["results"][0]
    assert result["h2d_ms"] is None and result["gpu_compute_ms"]["median"] > 0
    assert result["timing"]["cuda_graph"] and result["timing"]["no_transfers"]


# -- interleaved rounds (--rounds) and one file per model (--split) ------------------------------------------


def test_round_timing_and_pooling_keep_the_budget_and_the_order():
    from edgeresnet.bench.core import pool_timings, round_timing
    from edgeresnet.bench.timing import TimingConfig, Timings

    timing = TimingConfig(warmup_ms=200, warmup_iterations=5, min_iterations=10, duration_s=3.0)
    first, later = round_timing(timing, 4, first=True), round_timing(timing, 4, first=False)
    assert (first.duration_s, first.min_iterations, first.warmup_ms, first.warmup_iterations) == (0.75, 3, 200, 5)
    assert (later.duration_s, later.min_iterations, later.warmup_ms, later.warmup_iterations) == (0.75, 3, 50, 2)
    pooled = pool_timings([Timings([1.0, 2.0], {"h2d": [0.1, 0.2]}, 5, 10.0, 0.5),
                           Timings([3.0], {"h2d": [0.3]}, 2, 4.0, 0.25, stopped_by_cap=True)])
    assert pooled.latency_ms == [1.0, 2.0, 3.0] and pooled.components == {"h2d": [0.1, 0.2, 0.3]}
    assert (pooled.warmup_iterations, pooled.warmup_ms, pooled.wall_s, pooled.stopped_by_cap) == (7, 14.0, 0.75, True)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_balanced_orders_put_every_model_in_every_position_and_after_every_other(n):
    from edgeresnet.bench.core import balanced_orders

    rows = balanced_orders(n)
    assert all(sorted(row) == list(range(n)) for row in rows)
    for position in range(n):
        counts = [sum(row[position] == item for row in rows) for item in range(n)]
        assert len(set(counts)) == 1  # every model equally often in every position
    follows = [sum(1 for row in rows for a, b in zip(row, row[1:]) if (a, b) == (x, y))
               for x in range(n) for y in range(n) if x != y]
    assert len(set(follows)) <= 1  # every ordered pair of neighbours equally often
    assert balanced_orders(2) == [[0, 1], [1, 0]]


def test_interleaved_rounds_run_in_abba_order(assets, monkeypatch):
    """Which model the loop times when: A B, B A, A B (so no model always goes first)."""
    from edgeresnet.bench import core
    from edgeresnet.bench.timing import TimingConfig

    order: list[str] = []
    real_measure = core.measure

    def spy(step, config, progress=None):
        order.append(spy.current)
        return real_measure(step, config, progress=progress)

    def reporter(progress, label, batch):
        spy.current = label.split(" [")[0]
        return None

    monkeypatch.setattr(core, "measure", spy)
    monkeypatch.setattr(core, "_reporter", reporter)
    settings = core.BenchSettings(timing=TimingConfig(warmup_ms=0, warmup_iterations=1, min_iterations=3,
                                                      duration_s=0.0))
    a, b = replace_name(settings, "A"), replace_name(settings, "B")
    results = core.benchmark_interleaved([assets["onnx"], assets["onnx"]], [a, b], 3, environment={})
    assert order == ["A", "B", "B", "A", "A", "B"]
    assert [r["model"] for r in results] == ["A", "B"]
    assert all(r["iterations"] == 3 * 1 and r["timing"]["rounds"] == 3 for r in results)


def replace_name(settings, name):
    import dataclasses

    return dataclasses.replace(settings, model_name=name)


def test_benchmark_rounds_split_one_file_per_model_and_delay_only_one(assets, tmp_path, capsys, monkeypatch):
    import shutil

    for side in ("base", "head"):
        shutil.copyfile(assets["onnx"], tmp_path / f"{side}.onnx")
        shutil.copyfile(str(assets["onnx"]) + ".json", tmp_path / f"{side}.onnx.json")
    monkeypatch.setenv("EDGERESNET_INJECT_DELAY_MS", "40")
    monkeypatch.setenv("EDGERESNET_INJECT_DELAY_ONLY", "head.onnx")
    out = tmp_path / "gate"
    code, _, err = run(["benchmark", str(tmp_path / "base.onnx"), str(tmp_path / "head.onnx"), "--rounds", "4",
                        "--split", "--out", str(out), "--model-name", "m", "--target", "host-cpu",
                        "--duration", "0.1", "--min-iterations", "50", "--warmup-ms", "0", "--warmup-iterations", "1"],
                       capsys)
    assert code == 0, err
    base = read_results(out / "base_ort_fp32_host-cpu.json")["results"]
    head = read_results(out / "head_ort_fp32_host-cpu.json")["results"]
    assert len(base) == len(head) == 1 and base[0]["model"] == head[0]["model"] == "m"
    assert base[0]["artifact"].endswith("base.onnx") and head[0]["artifact"].endswith("head.onnx")
    assert base[0]["timing"]["rounds"] == head[0]["timing"]["rounds"] == 4 and base[0]["iterations"] >= 50
    assert not any("INJECT_DELAY" in w for w in base[0]["warnings"])
    assert any("INJECT_DELAY" in w for w in head[0]["warnings"])
    assert head[0]["latency_ms"]["median"] > base[0]["latency_ms"]["median"] + 20  # the 40 ms landed on head only
    code, stdout, err = run(["regress", "-b", str(out / "base_ort_fp32_host-cpu.json"),
                             "-c", str(out / "head_ort_fp32_host-cpu.json"), "--json", "-"], capsys)
    assert code == 1 and json.loads(stdout)["results"][0]["verdict"] == "regression"


@pytest.mark.parametrize("extra, needle", [
    (["--rounds", "0"], "--rounds 0: must be a positive number"),
    (["--split"], "--split: needs --out DIR"),
])
def test_rounds_and_split_bad_input(assets, capsys, extra, needle):
    code, _, err = run(["benchmark", str(assets["onnx"]), *extra, *FAST], capsys)
    one_line_error(code, err, needle)


def test_split_refuses_models_with_the_same_file_name(assets, tmp_path, capsys):
    code, _, err = run(["benchmark", str(assets["onnx"]), str(assets["onnx"]), "--split", "--out", str(tmp_path),
                        *FAST], capsys)
    one_line_error(code, err, "--split: several MODELs are named 'r18'")
