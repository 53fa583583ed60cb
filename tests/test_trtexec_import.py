"""trtexec logs (synthetic 8.2, 8.5, 10.x; real ones in test_trtexec_real_logs.py) and --exportTimes traces become schema-valid results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeresnet.bench import stats
from edgeresnet.bench.schema import make_document, validate
from edgeresnet.bench.trtexec_import import import_trtexec
from edgeresnet.bench.trtexec_log import decode_version, parse_log
from edgeresnet.bench.trtexec_times import parse_export_times
from edgeresnet.errors import UserError

DATA = Path(__file__).parent / "data" / "trtexec"
LOG_82, TIMES_82 = DATA / "trtexec_8.2_nano.log", DATA / "trtexec_8.2_nano.times.json"
LOG_85 = DATA / "trtexec_8.5_xavier_nx.log"
LOG_10, TIMES_10 = DATA / "trtexec_10.3_orin_nano.log", DATA / "trtexec_10.3_orin_nano.times.json"


def test_version_tags():
    assert decode_version("8201") == "8.2.1"
    assert decode_version("8502") == "8.5.2"
    assert decode_version("100300") == "10.3.0"
    assert decode_version("101300") == "10.13.0"


def test_parse_82_log_single_percentile_and_end_to_end():
    log = parse_log(LOG_82.read_text())
    assert log.version == "8.2.1" and log.device == "NVIDIA Tegra X1" and log.compute_capability == "5.3"
    assert log.precision == "fp16" and log.batch == 1 and log.model_path == "resnet18.onnx"
    assert set(log.metrics) == {"latency", "end_to_end", "enqueue", "h2d", "gpu_compute", "d2h"}
    assert list(log.metrics["latency"]["percentiles"]) == [99.0]
    assert log.timed_queries == 263 and log.warmup_queries == 18 and log.warmup_ms == 200.0
    assert log.walltime_s == 3.00347 and log.passed is True


def test_parse_10x_log_three_percentiles_and_cv_warning():
    log = parse_log(LOG_10.read_text())
    assert log.version == "10.3.0" and log.device == "Orin"
    assert log.precision == "int8"  # --int8 --fp16: int8 wins the label
    assert log.batch == 8 and log.input_shape == [8, 3, 224, 224]
    lat = log.metrics["latency"]
    assert lat["median"] == 5.27405 and lat["percentiles"] == {90.0: 5.32007, 95.0: 5.33142, 99.0: 6.72534}
    assert "end_to_end" not in log.metrics
    assert log.throughput_qps == 187.751
    assert log.gpu_compute_cv == 4.30482
    assert log.trt_warnings[0].startswith("trtexec: GPU compute time is unstable") and "--useSpinWait" in log.trt_warnings[0]


def test_summary_only_import_85():
    result, environment = import_trtexec([LOG_85], target="xavier-nx", precision="int8")
    assert result["backend"] == "trtexec" and result["target"] == "xavier-nx" and result["precision"] == "int8"
    assert result["model"] == "resnet18_int8_b8" and result["batch"] == 8
    lat = result["latency_ms"]
    assert lat["samples"] == [] and lat["median"] == 4.94336 and lat["p99"] == 5.27734
    assert lat["p90"] is None and lat["median_ci"] is None
    assert result["throughput_ips"] == pytest.approx(200.525 * 8)  # explicit batch: qps x batch
    assert result["gpu_compute_ms"]["cv"] == 5.47898
    assert result["latency_kind"] == "trtexec_latency"
    assert any("without per-iteration samples" in w for w in result["warnings"])
    assert environment["tensorrt"] == "8.5.2" and environment["gpu"]["name"] == "Xavier"
    validate(make_document(environment, [result]))


def test_log_plus_export_times_10x():
    result, environment = import_trtexec([LOG_10, TIMES_10], target="orin-nano")
    lat = result["latency_ms"]
    assert lat["n"] == len(lat["samples"]) == result["iterations"] == 564
    # the trace reproduces the numbers trtexec printed (6 significant digits)
    assert (lat["median"], lat["p90"], lat["p95"], lat["p99"]) == (5.27405, 5.32007, 5.33142, 6.72534)
    assert lat["median_ci"][0] <= lat["median"] <= lat["median_ci"][1]
    assert result["gpu_compute_ms"]["median"] == pytest.approx(4.86017, rel=1e-5)
    assert result["enqueue_ms"]["n"] == 564
    assert result["throughput_ips"] == pytest.approx(187.751 * 8, rel=1e-4)
    assert not any("differs from its --exportTimes" in w for w in result["warnings"])
    assert result["source"]["trtexec_version"] == "10.3.0" and len(result["source"]["export_times_sha256"]) == 64
    validate(make_document(environment, [result]))


def test_82_trace_drops_warmups_like_trtexec():
    records = parse_export_times(json.loads(TIMES_82.read_text()))
    assert len(records) == 281 and "end_to_end" in records[0]
    result, _ = import_trtexec([TIMES_82], batch=1, precision="fp16", model_name="resnet18", target="jetson-nano")
    assert result["iterations"] == 263  # 18 warm-up queries (computeStart < 200 ms) dropped
    assert any("dropped 18 warm-up queries" in w for w in result["warnings"])
    log = parse_log(LOG_82.read_text())
    assert result["latency_ms"]["median"] == log.metrics["latency"]["median"]
    assert result["latency_ms"]["p99"] == log.metrics["latency"]["percentiles"][99.0]


def test_times_only_import_says_what_is_unknown():
    result, _ = import_trtexec([TIMES_10])
    assert result["batch"] == 1 and result["precision"] == "unknown" and result["target"] == "unknown"
    assert any("batch size unknown" in w for w in result["warnings"])
    assert any("precision unknown" in w for w in result["warnings"])


def test_mismatched_log_and_trace_are_flagged():
    result, _ = import_trtexec([LOG_10, TIMES_82], warmup_ms=200)
    assert any("differs from its --exportTimes trace" in w for w in result["warnings"])


def test_key_aliases_trt7_and_case():
    records = parse_export_times([{"startInMs": 1.0, "endInMs": 1.5, "startComputeMs": 1.5, "endComputeMs": 3.5,
                                   "startOutMs": 3.5, "endOutMs": 3.6, "inMs": 0.5, "computeMs": 2.0, "outMs": 0.1,
                                   "latencyMs": 2.6}, {"STARTCOMPUTEMS": 4.0, "ENDCOMPUTEMS": 6.5}])
    assert records[0]["h2d"] == 0.5 and records[0]["d2h"] == 0.1 and records[0]["latency"] == 2.6
    assert records[1]["gpu_compute"] == 2.5 and records[1]["latency"] == 2.5


@pytest.mark.parametrize("content, message", [
    ("hello, this is a build log of something else\n", "not a trtexec log"),
    ("[05/21/2021-09:59:29] [I] Host Latency\n[05/21/2021-09:59:29] [I] min: 638.401 ms (end to end 638.401 ms)\n"
     "[05/21/2021-09:59:29] [I] percentile: 1.67 ms at 99% (end to end 3.03 ms at 99%)\n", "Latency line has no max/mean/median figure"),
    ("&&&& RUNNING TensorRT.trtexec [TensorRT v8502] # trtexec --onnx=m.onnx\n[01/01/2023-00:00:00] [E] Error[4]: "
     "[network.cpp::validate::2997] Error Code 4: Internal Error\n&&&& FAILED TensorRT.trtexec [TensorRT v8502] # trtexec\n",
     "without a performance summary"),
    ('[{"name": "conv1", "timeMs": 1.2}]', "not a trtexec --exportTimes file"),
    ("[]", "not a trtexec --exportTimes file"),
])
def test_foreign_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "run.log"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as info:
        import_trtexec([path])
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_binary_and_missing_files(tmp_path):
    blob = tmp_path / "model.engine"
    blob.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UserError, match="binary file, not a trtexec log"):
        import_trtexec([blob])
    with pytest.raises(UserError, match="file not found"):
        import_trtexec([tmp_path / "absent.log"])


def test_two_runs_at_once_are_refused():
    with pytest.raises(UserError, match="one trtexec run at a time"):
        import_trtexec([LOG_10, LOG_85])


def test_imported_percentiles_use_trtexec_ranks():
    result, _ = import_trtexec([TIMES_10])
    ordered = sorted(result["latency_ms"]["samples"])
    assert result["latency_ms"]["p99"] == ordered[stats.percentile_index(99, len(ordered))]


def test_device_names_map_to_known_targets():
    from edgeresnet.bench.core import guess_target

    assert import_trtexec([LOG_82])[0]["target"] == "jetson-nano"  # "Selected Device: NVIDIA Tegra X1"
    assert import_trtexec([LOG_10])[0]["target"] == "orin"  # trtexec says only "Orin": pass --target
    assert guess_target("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super") == "orin-nano"
    assert guess_target("NVIDIA Jetson AGX Orin Developer Kit") == "agx-orin"
    assert guess_target("NVIDIA H100 80GB HBM3") == "desktop-h100"
    assert guess_target("NVIDIA GeForce RTX 3060 Laptop GPU") == "desktop-ampere"
    assert guess_target("Quadro P1000") is None
