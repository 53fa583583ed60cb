"""`edgeresnet regress` and `edgeresnet baseline update` through the real entry point: exit codes, messages, files."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from edgeresnet.artifacts import read_manifest, sha256_file
from edgeresnet.bench import stats as bench_stats
from edgeresnet.cli.main import main

CPU_ENV = {"host": {"cpu": "AMD EPYC", "cores": 2, "machine": "x86_64", "system": "Linux"},
           "versions": {"onnxruntime": "1.32.0"}, "gpu": None, "jetson": None, "target": "cpu",
           "power_mode": None, "tensorrt": None}


def _samples(seed: int, scale: float = 1.0, n: int = 300) -> list[float]:
    return (10.0 * scale * np.exp(np.random.default_rng(seed).normal(0.0, 0.05, n))).tolist()


def _write(path: Path, samples: list[float], top1: float = 95.0, env: dict | None = None,
           model: str = "resnet18") -> Path:
    result = {"model": model, "artifact": f"{model}.onnx", "artifact_sha256": "", "target": "cpu", "backend": "ort",
              "precision": "fp32", "batch": 1, "latency_ms": bench_stats.summarize(samples, resamples=200),
              "throughput_ips": 100.0, "iterations": len(samples), "duration_s": 3.0, "gpu_compute_ms": None,
              "h2d_ms": None, "d2h_ms": None, "accuracy": {"top1": top1, "top5": 99.0, "n": 360}, "warnings": []}
    doc = {"schema": "edgeresnet.benchmark/1", "created": "2026-01-01T00:00:00+00:00", "tool": {"edgeresnet": "0.1.0"},
           "environment": env or CPU_ENV, "results": [result]}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.fixture()
def base(tmp_path: Path) -> Path:
    return _write(tmp_path / "base.json", _samples(1))


def test_pass_writes_junit_markdown_and_json(tmp_path, base, capsys):
    cur = _write(tmp_path / "cur.json", _samples(2))
    junit, md, js = tmp_path / "gate.xml", tmp_path / "gate.md", tmp_path / "gate.json"
    code, out, err = run(["regress", "--baseline", str(base), "--current", str(cur), "--junit", str(junit),
                          "--markdown", str(md), "--json", str(js)], capsys)
    assert code == 0, err
    assert "PASS: 1 compared" in out
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "0"
    assert "regression gate passed" in md.read_text()
    assert json.loads(js.read_text())["verdict"] == "pass"


def test_regression_exits_1_and_names_it(tmp_path, base, capsys):
    cur = _write(tmp_path / "cur.json", _samples(2, scale=1.2))
    junit = tmp_path / "gate.xml"
    code, out, _ = run(["regress", "-b", str(base), "-c", str(cur), "--junit", str(junit)], capsys)
    assert code == 1
    assert "REGRESSION" in out and "median slower by +" in out and "FAIL: 1 compared, 1 regression" in out
    failure = ET.parse(junit).getroot().find("testsuite/testcase/failure")
    assert failure is not None and failure.get("type") == "regression"


def test_improvement_passes_and_json_on_stdout_stays_parseable(tmp_path, base, capsys):
    cur = _write(tmp_path / "cur.json", _samples(2, scale=0.8))
    code, out, err = run(["regress", "-b", str(base), "-c", str(cur), "--json", "-"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["results"][0]["verdict"] == "improvement" and data["results"][0]["latency"]["change"] < -0.15
    assert "improvement" in err  # the table went to stderr


def test_tolerance_and_metric_options(tmp_path, base, capsys):
    cur = _write(tmp_path / "cur.json", _samples(2, scale=1.2))
    assert run(["regress", "-b", str(base), "-c", str(cur), "--tolerance", "30%"], capsys)[0] == 0
    assert run(["regress", "-b", str(base), "-c", str(cur), "--metric", "p90", "--resamples", "300"], capsys)[0] == 1


def test_accuracy_drop_fails(tmp_path, base, capsys):
    cur = _write(tmp_path / "cur.json", _samples(2), top1=94.0)
    code, out, _ = run(["regress", "-b", str(base), "-c", str(cur)], capsys)
    assert code == 1 and "dropped 1.00 points > 0.5 allowed" in out
    assert run(["regress", "-b", str(base), "-c", str(cur), "--max-accuracy-drop", "1.5"], capsys)[0] == 0


def test_missing_key_fails_unless_allowed(tmp_path, base, capsys):
    cur = tmp_path / "cur.json"
    doc = json.loads(_write(cur, _samples(2)).read_text())
    extra = json.loads(_write(tmp_path / "x.json", _samples(3), model="resnet50").read_text())["results"][0]
    doc["results"].append(extra)
    base_doc = json.loads(base.read_text())
    base_doc["results"].append(dict(extra, model="mobilenet"))
    base.write_text(json.dumps(base_doc))
    cur.write_text(json.dumps(doc))
    code, out, _ = run(["regress", "-b", str(base), "-c", str(cur)], capsys)
    assert code == 1 and "MISSING" in out and "1 missing, 1 new" in out
    assert run(["regress", "-b", str(base), "-c", str(cur), "--allow-missing"], capsys)[0] == 0


def test_environment_mismatch_is_refused_in_one_line(tmp_path, base, capsys):
    other = dict(CPU_ENV, host=dict(CPU_ENV["host"], cpu="Intel Xeon"), power_mode="performance")
    cur = _write(tmp_path / "cur.json", _samples(2), env=other)
    code, out, err = run(["regress", "-b", str(base), "-c", str(cur)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: environments differ: ")
    assert "power mode none vs 'performance'" in err and "CPU 'AMD EPYC' vs 'Intel Xeon'" in err
    code, out, _ = run(["regress", "-b", str(base), "-c", str(cur), "--allow-env-change"], capsys)
    assert code == 0 and "environments differ (allowed)" in out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON (line 1"),
        ("[1, 2]", "not an edgeresnet benchmark result"),
        ('{"kind": "benchmark-results", "sha256": "ab"}', "no \"schema\" field (this looks like a sidecar manifest)"),
        ('{"schema": "edgeresnet.benchmark/9"}', "newer than edgeresnet.benchmark/1"),
        ('{"schema": "edgeresnet.benchmark/1", "results": []}', "does not match edgeresnet.benchmark/1"),
    ],
)
def test_malformed_inputs_exit_2_with_one_line(tmp_path, base, capsys, content, expected):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    code, out, err = run(["regress", "-b", str(base), "-c", str(bad)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"error: --current {bad}: ") and expected in err


def test_bad_sample_values_and_missing_files_exit_2(tmp_path, base, capsys):
    doc = json.loads(base.read_text())
    doc["results"][0]["latency_ms"]["samples"][5] = -1.0
    neg = tmp_path / "neg.json"
    neg.write_text(json.dumps(doc))
    code, _, err = run(["regress", "-b", str(base), "-c", str(neg)], capsys)
    assert code == 2 and "positive finite" in err
    code, _, err = run(["regress", "-b", str(tmp_path / "nope.json"), "-c", str(base)], capsys)
    assert code == 2 and err == f"error: --baseline {tmp_path / 'nope.json'}: file not found; check the path\n"
    code, _, err = run(["regress", "-b", str(base), "-c", str(base), "--tolerance", "5"], capsys)
    assert code == 2 and "--tolerance 5: ambiguous" in err
    code, _, err = run(["regress", "-b", str(base), "-c", str(base), "--metric", "p50"], capsys)
    assert code == 2 and "--metric p50" in err
    (tmp_path / "plain").write_text("x")  # missing directories are created; a regular file in the way is refused
    code, _, err = run(["regress", "-b", str(base), "-c", str(base), "--junit", str(tmp_path / "plain" / "x.xml")],
                       capsys)
    assert code == 2 and "--junit" in err and "is a file, not a directory" in err
    assert run(["regress", "--current", str(base)], capsys)[0] == 2  # --baseline is required


def test_repeated_runs_pool(tmp_path, capsys):
    bases = [_write(tmp_path / f"b{i}.json", _samples(10 + i, n=100)) for i in range(3)]
    curs = [_write(tmp_path / f"c{i}.json", _samples(20 + i, scale=1.15, n=100)) for i in range(3)]
    argv = ["regress", "--json", "-"]
    for b, c in zip(bases, curs):
        argv += ["-b", str(b), "-c", str(c)]
    code, out, _ = run(argv, capsys)
    data = json.loads(out)
    assert code == 1 and data["results"][0]["latency"]["n_baseline"] == 300 and len(data["current"]) == 3


def test_baseline_update_copies_with_manifest_and_replaces(tmp_path, base, capsys):
    into = tmp_path / "baselines"
    code, out, err = run(["baseline", "update", str(base), "--into", str(into)], capsys)
    assert code == 0, err
    dest = into / "base.json"
    assert dest.read_bytes() == base.read_bytes() and "baseline created" in out
    manifest = read_manifest(dest, required=True)
    assert manifest["kind"] == "benchmark-baseline" and manifest["sha256"] == sha256_file(base)
    assert manifest["file"] == "base.json" and manifest["promoted_from"]["path"] == str(base.resolve())
    assert manifest["replaces_sha256"] is None and manifest["settings"]["results"] == ["resnet18 cpu/ort/fp32/b1"]
    newer = _write(tmp_path / "newer.json", _samples(5))
    code, out, _ = run(["baseline", "update", str(newer), "--into", str(into), "--name", "base.json", "--json", "-"],
                       capsys)
    assert code == 0 and json.loads(out)["replaced_sha256"] == manifest["sha256"]
    assert dest.read_bytes() == newer.read_bytes()
    assert read_manifest(dest)["replaces_sha256"] == manifest["sha256"]
    assert sorted(p.name for p in into.iterdir()) == ["base.json", "base.json.json"]  # no temporary files left


def test_baseline_update_refuses_bad_input_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    into = tmp_path / "baselines"
    code, _, err = run(["baseline", "update", str(bad), "--into", str(into)], capsys)
    assert code == 2 and "not valid JSON" in err and not into.exists()
    good = _write(tmp_path / "good.json", _samples(1))
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = run(["baseline", "update", str(good), "--into", str(afile)], capsys)
    assert code == 2 and "is a file" in err
    code, _, err = run(["baseline", "update", str(good), "--into", str(into), "--name", "../x.json"], capsys)
    assert code == 2 and "plain file name" in err


def test_baseline_update_checks_json_before_promoting(tmp_path, base, capsys):
    """A --json PATH that cannot be written is refused before the baseline is touched (not after the copy)."""
    into = tmp_path / "baselines"
    in_the_way = tmp_path / "afile"
    in_the_way.write_text("x")
    code, _, err = run(["baseline", "update", str(base), "--into", str(into), "--json", str(in_the_way / "x.json")],
                       capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --json") and "Traceback" not in err
    assert not into.exists()
