"""Real trtexec logs posted publicly (tests/data/trtexec/real/README.md names each source) import with the
figures they print; pastes (no prefixes, extra prefixes, prompts, hand edits) and --exportTimes files with
several arrays or warm-ups import too; foreign files are one-line errors naming the option."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from edgeresnet.bench.schema import make_document, validate
from edgeresnet.bench.trtexec_import import import_trtexec
from edgeresnet.bench.trtexec_log import parse_log
from edgeresnet.errors import UserError

REAL = Path(__file__).parent / "data" / "trtexec" / "real"


def _log(name: str):
    return parse_log((REAL / name).read_text(encoding="utf-8"), name)


def _import(name: str, **kw):
    result, environment = import_trtexec([REAL / name], **kw)
    validate(make_document(environment, [result]))
    return result, environment


def test_trt7_host_latency_blocks_and_zero_throughput():
    """TensorRT 7.2 (Win10) console format: imported, the printed 0 qps replaced by a derived figure."""
    log = _log("trt7.2_yolox_win10_readme.log")
    assert log.format == "trt7" and log.version is None and log.passed is True
    lat = log.metrics["latency"]
    assert (lat["min"], lat["max"], lat["mean"], lat["median"]) == (64.0759, 208.799, 70.7899, 66.6198)
    assert lat["percentiles"] == {99.0: 208.799}
    assert log.metrics["end_to_end"]["median"] == 131.152 and log.metrics["end_to_end"]["percentiles"] == {99.0: 208.846}
    assert log.metrics["gpu_compute"]["median"] == 65.8401 and log.metrics["gpu_compute"]["percentiles"] == {99.0: 208.289}
    assert log.throughput_qps == 0.0 and log.walltime_s == 2.66215 and log.gpu_compute_total_s == 2.66024
    result, environment = _import("trt7.2_yolox_win10_readme.log")
    assert result["latency_ms"]["median"] == 66.6198 and result["latency_ms"]["p99"] == 208.799
    # 2660.24 ms total GPU compute / 70.0063 ms mean = 38 queries over 2.66215 s
    assert result["iterations"] == 38 and result["throughput_ips"] == pytest.approx(38 / 2.66215)
    assert any("printed as 0 qps: TensorRT 7 multiplies by the implicit batch" in w for w in result["warnings"])
    assert result["enqueue_ms"] is None and any("enqueue not imported" in w and "mean" in w for w in result["warnings"])
    assert result["gpu_compute_ms"]["median"] == 65.8401
    assert any("names no TensorRT version" in w and "TensorRT 7 prints none" in w for w in result["warnings"])
    assert environment["tensorrt"] is None and result["precision"] == "fp32"  # --onnx, no precision flag


def test_trt7_block_pasted_indented_from_a_markdown_list():
    """The same real lines indented by four spaces (as pasted inside a list item) parse the same."""
    text = "\n".join("    " + ln for ln in (REAL / "trt7.2_yolox_win10_readme.log").read_text().splitlines())
    log = parse_log(text)
    assert log.format == "trt7" and log.metrics["latency"]["median"] == 66.6198
    assert log.metrics["gpu_compute"]["percentiles"] == {99.0: 208.289} and log.walltime_s == 2.66215
    assert log.command == "trtexec --verbose --onnx=yoloxx.onnx --saveEngine=yoloxx.engine"


def test_trt80_integer_version_line_and_end_to_end():
    log = _log("trt8.0.3_gtx1070_fp16.log")
    assert log.version == "8.0.3" and log.device == "NVIDIA GeForce GTX 1070" and log.precision == "fp16"
    assert log.batch == 4  # --shapes=x:0:4x1x28x28
    assert log.metrics["latency"]["median"] == 0.158081 and log.metrics["latency"]["percentiles"] == {99.0: 0.166382}
    assert log.metrics["end_to_end"]["median"] == 0.286621
    assert log.throughput_qps == 6182.1 and log.walltime_s == 3.00109
    # without the banner, only "TensorRT version: 8003" names the release
    text = "\n".join(ln for ln in (REAL / "trt8.0.3_gtx1070_fp16.log").read_text().splitlines()
                     if not ln.startswith("&&&&"))
    assert parse_log(text).version == "8.0.3"
    result, _ = _import("trt8.0.3_gtx1070_fp16.log")
    assert result["throughput_ips"] == pytest.approx(6182.1 * 4)


def test_trt82_gtx1070_summary():
    log = _log("trt8.2.3_gtx1070_fp32.log")
    assert log.version == "8.2.3" and log.precision == "fp32" and log.batch == 4
    assert log.timed_queries == 18722 and log.warmup_queries == 1188
    assert log.metrics["latency"]["median"] == 0.160156 and log.metrics["latency"]["percentiles"] == {99.0: 0.165894}
    result, environment = _import("trt8.2.3_gtx1070_fp32.log")
    assert result["iterations"] == 18722 and result["latency_ms"]["p99"] == 0.165894
    assert environment["tensorrt"] == "8.2.3"


def test_trt84_implicit_batch_throughput_counts_images():
    """Xavier AGX, '--batch=16' (implicit batch): trtexec's 41087.7 qps already counts images."""
    log = _log("trt8.4.0_xavier_agx_implicit_batch.log")
    assert log.version == "8.4.0" and log.implicit_batch == 16 and log.batch == 16 and log.passed is True
    assert log.metrics["latency"]["median"] == 0.401947 and log.metrics["latency"]["percentiles"] == {99.0: 0.420288}
    result, _ = _import("trt8.4.0_xavier_agx_implicit_batch.log")
    assert result["batch"] == 16 and result["throughput_ips"] == 41087.7
    assert result["iterations"] == round(41087.7 * 3.00119) // 16  # queries, not images
    assert result["gpu_compute_ms"]["median"] == 0.388443 and result["d2h_ms"]["p99"] == 0.00488281


def test_trt85_lines_cut_by_the_terminal_import_what_they_state():
    """Xavier AGX 8.5.2 paste whose last figures were cut ('percentile(99%) = 0.2551s'): imported, named."""
    log = _log("trt8.5.2_xavier_agx_cut_lines.log")
    lat = log.metrics["latency"]
    assert lat["median"] == 0.385986 and lat["percentiles"] == {90.0: 0.391113, 95.0: 0.393066, 99.0: 0.404907}
    assert log.metrics["enqueue"]["percentiles"] == {90.0: 0.209473, 95.0: 0.22229}
    assert log.metrics["enqueue"]["unreadable"] == ["percentile(99%)"]
    result, _ = _import("trt8.5.2_xavier_agx_cut_lines.log")
    assert result["latency_ms"]["p99"] == 0.404907 and result["throughput_ips"] == 43073.6
    assert result["gpu_compute_ms"]["p95"] == 0.374756 and result["gpu_compute_ms"]["p99"] is None
    assert result["d2h_ms"] is None and result["iterations"] == 0
    warnings = result["warnings"]
    assert any("Enqueue Time percentile(99%) unreadable" in w for w in warnings)
    assert any("GPU Compute Time percentile(99%) unreadable" in w for w in warnings)
    assert any("neither the timed query count nor the walltime" in w for w in warnings)
    assert any("the log has no trtexec command line" in w for w in warnings)


def test_trt86_three_percentiles_and_cv():
    log = _log("trt8.6.0_rtx3090_loadengine.log")
    assert log.version == "8.6.0" and log.device == "NVIDIA GeForce RTX 3090" and log.batch == 4
    lat = log.metrics["latency"]
    assert lat["median"] == 0.0517578 and lat["percentiles"] == {90.0: 0.0532227, 95.0: 0.053772, 99.0: 0.0630798}
    assert log.gpu_compute_cv == 44.3558 and "--useSpinWait" in log.trt_warnings[0]
    result, _ = _import("trt8.6.0_rtx3090_loadengine.log")
    assert result["precision"] == "unknown"  # --loadEngine: the log does not say
    assert result["gpu_compute_ms"]["cv"] == 44.3558 and result["throughput_ips"] == pytest.approx(21009.2 * 4)


def test_trt10_banner_with_build_tag():
    """'[TensorRT v101601] [b11]': version, command and PASSED read from the banner."""
    log = _log("trt10.16.1_h100_onnx.log")
    assert log.version == "10.16.1" and log.passed is True
    assert log.command.startswith("trtexec --onnx=") and log.precision == "fp32"
    assert log.batch == 1  # "Automatically overriding shape to: 1x1x28x28"
    lat = log.metrics["latency"]
    assert lat["median"] == 0.0440674 and lat["percentiles"][99.0] == 0.0512695
    result, _ = _import("trt10.16.1_h100_onnx.log")
    assert result["model"] == "model-trained" and result["throughput_ips"] == 15374.3
    banner_only = "\n".join(ln for ln in (REAL / "trt10.16.1_h100_onnx.log").read_text().splitlines()
                            if "TensorRT version:" not in ln)
    assert parse_log(banner_only).version == "10.16.1"


def test_trt10_no_data_transfers():
    log = _log("trt10.16.1_h100_nodatatransfers.log")
    assert log.flags.get("noDataTransfers") == "" and log.batch == 4
    assert log.metrics["h2d"]["median"] == 0.0 and log.metrics["d2h"]["max"] == 0.0
    result, _ = _import("trt10.16.1_h100_nodatatransfers.log")
    assert result["latency_ms"]["median"] == 0.0388184 and result["latency_ms"]["p99"] == 0.0390625
    assert result["throughput_ips"] == pytest.approx(24896.9 * 4)


def test_hand_edited_paste_missing_equals_and_merged_lines():
    """Was KeyError: 'max' (values without '=', D2H + walltime + CV warning on one line)."""
    log = _log("jetson_yolov5_handedited_issue.log")
    lat = log.metrics["latency"]
    assert (lat["min"], lat["max"], lat["mean"], lat["median"]) == (5.38959, 6.19507, 5.93288, 6.02185)
    assert lat["percentiles"] == {99.0: 6.17407}
    assert log.metrics["gpu_compute"]["percentiles"] == {99.0: 3.87793}
    assert log.metrics["d2h"]["mean"] == 1.47722 and log.metrics["d2h"]["percentiles"] == {99.0: 1.50879}
    assert log.walltime_s == 3.05281 and log.gpu_compute_total_s == 1.87796 and log.gpu_compute_cv == 5.55763
    assert "--useSpinWait" in log.trt_warnings[0]
    result, _ = _import("jetson_yolov5_handedited_issue.log", batch=1)
    assert result["latency_ms"]["max"] == 6.19507 and result["throughput_ips"] == 169.352
    assert result["iterations"] == round(169.352 * 3.05281)


def test_wrapper_prefix_info_date_severity():
    log = _log("trt_ait_info_prefix_readme.log")
    assert log.metrics["latency"]["median"] == 9.76404 and log.metrics["latency"]["percentiles"][99.0] == 11.4742
    assert log.throughput_qps == 120.699 and log.walltime_s == 3.02405
    assert log.metrics["gpu_compute"]["median"] == 8.19409


def test_unprefixed_paste_with_prompt_and_continuation_lines():
    """The real 8.2.3 summary pasted without '[date] [I]', after the command typed at a prompt."""
    lines = (REAL / "trt8.2.3_gtx1070_fp32.log").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if "=== Performance summary ===" in ln)
    summary = [ln.split("] ", 2)[-1] for ln in lines[start:start + 12] if "[I]" in ln]
    text = "\n".join(["nano@nano:~$ /usr/src/tensorrt/bin/trtexec --onnx=resnet18.onnx \\",
                      ">   --fp16 --shapes=input:1x3x224x224 \\", ">   --workspace=1024"] + summary)
    log = parse_log(text)
    assert log.flags == {"onnx": "resnet18.onnx", "fp16": "", "shapes": "input:1x3x224x224", "workspace": "1024"}
    assert log.precision == "fp16" and log.model_path == "resnet18.onnx"
    assert log.metrics["latency"]["median"] == 0.160156 and log.throughput_qps == 6239.67
    # PowerShell prompt, as pasted in NVIDIA/TensorRT issue 4036
    ps = ("(python3.8) PS C:\\Users\\22715\\Desktop\\DCVC-main\\DCVC-FM> trtexec --loadEngine=FM_P_D_fp16.engine "
          "--shapes=ref_y:1x128x100x160,c1:1x48x1600x2560\n") + "\n".join(summary)
    assert parse_log(ps).flags["loadEngine"] == "FM_P_D_fp16.engine"


def _trace_84(n: int, start_ms: float, step_ms: float = 10.0) -> list[dict[str, float]]:
    """Records in TRT 8.4.1 sampleReporting.cpp exportJSONTrace's keys (no endToEndMs; warm-ups included)."""
    out = []
    for i in range(n):
        t = start_ms + i * step_ms
        out.append({"startEnqMs": t, "endEnqMs": t + 0.5, "startH2dMs": t + 0.1, "endH2dMs": t + 1.0,
                    "startComputeMs": t + 1.0, "endComputeMs": t + 8.0 + (i % 3), "startD2hMs": t + 8.0 + (i % 3),
                    "endD2hMs": t + 8.5 + (i % 3), "h2dMs": 0.9, "computeMs": 7.0 + (i % 3), "d2hMs": 0.5,
                    "latencyMs": 8.4 + (i % 3)})
    return out


def test_export_times_arrays_back_to_back_with_warmups(tmp_path):
    first, second = _trace_84(50, 0.0), _trace_84(40, 0.0)  # each run: computeStart from 1 ms, 20 below 200 ms
    path = tmp_path / "times.json"
    path.write_text(json.dumps(first, indent=2) + "\n" + json.dumps(second, indent=2) + "\n")
    result, environment = import_trtexec([path], batch=1, precision="fp16")
    validate(make_document(environment, [result]))
    assert result["iterations"] == (50 - 20) + (40 - 20)
    assert any("dropped 40 warm-up queries" in w for w in result["warnings"])
    assert any("2 JSON arrays back to back" in w for w in result["warnings"])
    # wall time: per run, last endD2h - first startH2d of the timed queries
    expected_s = ((49 * 10 + 8.5 + 1) - (200 + 0.1) + (39 * 10 + 8.5 + 0) - (200 + 0.1)) / 1000.0
    assert result["duration_s"] == pytest.approx(expected_s)


def test_export_times_84_single_array_drops_warmups_with_its_log(tmp_path):
    path = tmp_path / "times.json"
    path.write_text(json.dumps(_trace_84(60, 0.0)))
    log = tmp_path / "run.log"
    log.write_text("&&&& RUNNING TensorRT.trtexec [TensorRT v8401] # trtexec --onnx=m.onnx --fp16 "
                   "--shapes=input:1x3x224x224 --exportTimes=times.json\n"
                   + "\n".join(ln for ln in (REAL / "trt8.2.3_gtx1070_fp32.log").read_text().splitlines()
                               if not ln.startswith("&&&&") and "TensorRT version" not in ln))
    result, _ = import_trtexec([log, path])
    assert result["iterations"] == 40 and any("TensorRT 8.4.1 exports warm-ups" in w for w in result["warnings"])


def test_export_times_trt7_keys_warmups_and_swapped_enqueue(tmp_path):
    """TRT 7.1/7.2 write the whole trace and swap the enqueue/input timestamps (sampleReporting.cpp)."""
    records = []
    for i in range(30):
        t = 10.0 * i
        records.append({"startEnqMs": t + 0.1, "endEnqMs": t + 1.0, "startInMs": t, "endInMs": t + 0.4,
                        "startComputeMs": t + 1.0, "endComputeMs": t + 6.0, "startOutMs": t + 6.0,
                        "endOutMs": t + 6.5, "inMs": 0.9, "computeMs": 5.0, "outMs": 0.5, "latencyMs": 6.4,
                        "endToEndMs": 6.5})
    path = tmp_path / "times.json"
    path.write_text(json.dumps(records))
    result, _ = import_trtexec([path], batch=1, precision="fp16")
    assert result["iterations"] == 10  # computeStart 201 ms and later
    assert result["enqueue_ms"] is None and any("swap the enqueue and input-copy" in w for w in result["warnings"])
    assert result["latency_ms"]["median"] == 6.4 and result["gpu_compute_ms"]["median"] == 5.0


def test_cut_short_second_array_is_one_line(tmp_path):
    path = tmp_path / "times.json"
    path.write_text(json.dumps(_trace_84(5, 300.0)) + "\n[ { \"startEnqMs\" : 1.0,")
    with pytest.raises(UserError, match="JSON value 2 is cut short") as info:
        import_trtexec([path])
    assert "\n" not in str(info.value) and "--from-trtexec" in str(info.value)


def test_results_file_given_to_import_is_refused_naming_the_option(tmp_path, capsys):
    result, environment = import_trtexec([REAL / "trt8.6.0_rtx3090_loadengine.log"])
    results = tmp_path / "results.json"
    results.write_text(json.dumps(make_document(environment, [result])))
    code, out, err = run_cli(capsys, "benchmark", "--from-trtexec", str(results))
    assert code == 2 and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --from-trtexec ")
    assert "an edgeresnet results file" in lines[0] and "edgeresnet compare" in lines[0]
    other = tmp_path / "config.json"
    other.write_text('{"model": "resnet18"}')
    with pytest.raises(UserError, match="--from-trtexec .*JSON object, not a trtexec --exportTimes file"):
        import_trtexec([other])


def test_log_without_any_figure_is_refused_in_one_line(tmp_path):
    path = tmp_path / "run.log"
    path.write_text("[I] === Performance summary ===\n[I] Throughput: 10 qps\n")
    with pytest.raises(UserError, match="no Latency line") as info:
        import_trtexec([path])
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_an_elided_figure_in_a_hand_edited_paste_is_no_number(tmp_path):
    """A figure replaced by '...' or '-' in a paste is not a number: the rest is imported, never a ValueError."""
    text = (REAL / "jetson_yolov5_handedited_issue.log").read_text(encoding="utf-8")
    edited = text.replace("max 6.19507 ms", "max ... ms").replace("Throughput: 169.352", "Throughput: -")
    assert edited != text
    path = tmp_path / "elided.log"
    path.write_text(edited, encoding="utf-8")
    try:
        log = parse_log(edited, "elided.log")
    except UserError as exc:  # refused: one line naming the file
        assert "elided.log" in str(exc) and "\n" not in str(exc)
    else:
        assert "max" not in log.metrics["latency"] and log.metrics["latency"]["median"] == 6.02185
