"""The HTML report of a run directory, the Pareto front, and the demo's benchmark-everything entry point."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgeresnet.cli.main import main
from edgeresnet.report import plots
from edgeresnet.report.compare import pareto_front

pytest_plugins = ["bench_fixtures"]  # the session fixtures assets and results_file
DATA = Path(__file__).parent / "data" / "trtexec"


def test_pareto_front_by_hand():
    # (latency, accuracy): b is beaten by a (slower and less accurate); d ties c's latency with less accuracy
    points = [(1.0, 90.0), (2.0, 85.0), (3.0, 95.0), (3.0, 93.0), (0.5, 80.0), (4.0, 95.0)]
    assert pareto_front(points) == [4, 0, 2]
    assert pareto_front([]) == []


def _run_dir(root: Path, assets: dict, results_file: Path) -> Path:
    run = root / "run"
    (run / "export").mkdir(parents=True)
    (run / "train").mkdir()
    (run / "benchmark").mkdir()
    for key in ("onnx", "checkpoint"):
        shutil.copy(assets[key], run / "export" / assets[key].name)
        shutil.copy(str(assets[key]) + ".json", run / "export" / (assets[key].name + ".json"))
    # what `edgeresnet calibrate` leaves: an INT8 ONNX whose manifest records the accuracy gate
    from edgeresnet.artifacts import build_manifest, write_manifest

    int8 = run / "export" / "r18_int8.onnx"
    shutil.copy(assets["onnx"], int8)
    write_manifest(int8, build_manifest("onnx-int8", int8, command="calibrate", inputs={"source": assets["onnx"]},
                                        extra={"precision": "int8", "quantization": {
                                            "accuracy": {"top1_fp32": 96.3, "top1_int8": 95.9}}}))
    shutil.copy(results_file, run / "benchmark" / "r18_ort.json")
    shutil.copy(str(results_file) + ".json", run / "benchmark" / "r18_ort.json.json")
    assert main_ok(["benchmark", "--from-trtexec", str(DATA / "trtexec_10.3_orin_nano.times.json"), "--batch", "8",
                    "--precision", "int8", "--model-name", "r18", "--target", "orin-nano", "--json",
                    str(run / "benchmark" / "orin.json")])
    old = json.loads(results_file.read_text())
    old["schema"] = "edgeresnet.benchmark/0"
    (run / "benchmark" / "old.json").write_text(json.dumps(old))
    history = "epoch,train_loss,val_loss,val_acc\n1,2.10,1.90,41.0\n2,1.40,1.20,63.5\n3,0.90,0.80,78.2\n"
    (run / "train" / "history.csv").write_text(history)
    plots.training_curves([{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0}], run / "train" / "loss_curve.png")
    matrix = [[3 if i == j else 0 for j in range(10)] for i in range(10)]
    (run / "eval.json").write_text(json.dumps({"top1": 96.3, "top5": 100.0, "macro_f1": 0.962, "confusion_matrix": matrix,
                                               "class_names": [str(i) for i in range(10)]}))
    (run / "parity.json").write_text(json.dumps({"reference": "torch", "candidate": "ort", "max_abs": 2.1e-5,
                                                 "max_rel": 3.0e-4, "top1_agreement": 1.0, "passed": True}))
    return run


def main_ok(argv: list[str]) -> bool:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code == 0


def test_report_is_self_contained_and_complete(assets, results_file, tmp_path, capsys):
    run = _run_dir(tmp_path, assets, results_file)
    out = tmp_path / "report.html"
    assert main_ok(["report", str(run), "--out", str(out)])
    capsys.readouterr()
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    # no external assets: no src/href to anything but data: URIs and in-page anchors, no scripts
    assert not re.search(r"""(src|href)=['"](?!data:|#)""", text)
    assert "<script" not in text and "<link" not in text
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) >= 5  # training csv + png, confusion matrix, accuracy line, CDF, Pareto
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    for heading in ("Pipeline stages", "Training", "Evaluation", "Accuracy through the pipeline",
                    "Parity between backends", "Benchmarks", "All manifests"):
        assert heading in text, heading
    assert "export/r18.onnx" in text and "checkpoint" in text  # manifests listed by artifact
    assert "orin-nano" in text and "trtexec" in text  # imported results joined the table
    assert "older than edgeresnet.benchmark/1" in text  # the old file is listed, not fatal
    assert "quantization.accuracy.top1_int8" in text and "95.9" in text
    assert "96.3" in text
    assert Path(str(out) + ".json").exists()


def test_report_of_an_empty_dir_and_bad_paths(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main_ok(["report", str(empty), "--out", str(tmp_path / "r.html")])
    assert "Nothing to report yet" in (tmp_path / "r.html").read_text()
    with pytest.raises(SystemExit) as info:
        main(["report", str(tmp_path / "absent"), "--out", str(tmp_path / "r2.html")])
    assert info.value.code == 2 and "run directory not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        (tmp_path / "plain").write_text("x")  # missing directories are created; a regular file in the way is not
        main(["report", str(empty), "--out", str(tmp_path / "plain" / "such" / "r.html")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--out" in err and "is a file, not a directory" in err


def test_benchmark_run_dir_for_the_demo(assets, tmp_path):
    from edgeresnet.bench.rundir import benchmark_run_dir

    run = tmp_path / "demo"
    run.mkdir()
    for key in ("onnx", "checkpoint"):
        shutil.copy(assets[key], run / assets[key].name)
        shutil.copy(str(assets[key]) + ".json", run / (assets[key].name + ".json"))
    shutil.copy(assets["onnx"], run / "stray.onnx")  # no manifest: not made by the pipeline
    outcome = benchmark_run_dir(run, data=str(assets["data"]), batches=(1, 8), duration_s=0.05, warmup_ms=0,
                                warmup_iterations=1, min_iterations=3, target="host-cpu", progress=False)
    document = outcome["document"]
    backends = sorted({(r["backend"], r["batch"]) for r in document["results"]})
    assert backends == [("ort", 1), ("torch", 1), ("torch", 8)]  # the ONNX profile stops at batch 4
    assert any("stray.onnx" in note for note in outcome["skipped"])
    assert any("batch 8 is outside" in note for note in outcome["skipped"])
    assert all(r["accuracy"]["n"] == 10 for r in document["results"])
    assert outcome["results"] == run / "benchmark" / "results.json" and outcome["results"].exists()
    assert outcome["report"] == run / "report.html" and "Benchmarks" in outcome["report"].read_text()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="needs headless Chromium")
def test_report_renders_in_headless_chromium(assets, results_file, tmp_path):
    run = _run_dir(tmp_path, assets, results_file)
    out = tmp_path / "report.html"
    assert main_ok(["report", str(run), "--out", str(out)])
    shot = tmp_path / "shot.png"
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1280,2400", f"--screenshot={shot}", out.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.exists(), done.stderr[-400:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000  # not a blank page
