"""Files the user hands us and paths we write to: checkpoints of every common layout, output directories,
image folders with decompression bombs, targets and results files that are not what their option says.

Everything here runs the real code on real files (torch.save, safetensors, PIL-written PNGs, the real CLI
entry point); the only simulated fault is a full disk, raised as the OSError a write gets from the kernel.
"""

from __future__ import annotations

import argparse
import errno
import json
import struct
import zlib
from pathlib import Path

import pytest
import torch

from conftest import assert_one_line_error, run_cli
from edgeresnet.artifacts import atomic_output, safe_torch_load
from edgeresnet.errors import UserError
from edgeresnet.models import ModelSpec, build_model, import_weights
from helpers_common import write_three_digit_classes

pytestmark = pytest.mark.usefixtures("torch_single_thread", "wide_terminal")


@pytest.fixture(scope="module")
def r18() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model(ModelSpec("resnet18", 10)).state_dict()


def _shifted(state: dict[str, torch.Tensor], delta: float) -> dict[str, torch.Tensor]:
    return {k: (v + delta if v.is_floating_point() else v.clone()) for k, v in state.items()}


# -- checkpoints ---------------------------------------------------------------------------------------------


def test_text_file_as_checkpoint_is_one_line_everywhere(capsys, tmp_path):
    """Was: ``KeyError: 101`` from the weights-only unpickler (a text file starts with pickle opcode 'h')."""
    text = tmp_path / "notes.pt"
    text.write_text("hello world, this is not a checkpoint\n")
    for args in (["evaluate", text, "--no-plot"], ["export", text, "--out", tmp_path / "m.onnx"],
                 ["import", text, "--arch", "resnet18", "--num-classes", "3", "--out", tmp_path / "m.pt"]):
        code, _, err = run_cli(capsys, *args)
        assert_one_line_error(code, err, "notes.pt", "not a PyTorch checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.pt"]


@pytest.mark.parametrize("blob", [b"\x80\x02garbage" * 4, b"PK\x03\x04" + b"\x00" * 64, b"{\"a\": 1}",
                                  b"\x00\x01\x02\x03" * 8])
def test_malformed_streams_are_user_errors(tmp_path, blob):
    path = tmp_path / "w.pth"
    path.write_bytes(blob)
    with pytest.raises(UserError, match="w.pth") as info:
        safe_torch_load(path)
    message = str(info.value)
    assert "\n" not in message and "not a PyTorch" in message
    assert "refused" not in message  # a damaged stream is not a file that would run code


def test_legacy_pickle_format_still_loads(tmp_path, r18):
    path = tmp_path / "legacy.pth"
    torch.save(r18, path, _use_new_zipfile_serialization=False)
    torch.testing.assert_close(safe_torch_load(path)["conv1.weight"], r18["conv1.weight"])


def test_safetensors_import_and_truncated_file(capsys, tmp_path, r18):
    from safetensors.torch import save_file

    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in r18.items()}, str(weights))
    model, notes = import_weights(weights, ModelSpec("resnet18", 10))
    torch.testing.assert_close(model.layer4[1].conv2.weight, r18["layer4.1.conv2.weight"])
    assert notes == []
    code, _, err = run_cli(capsys, "import", weights, "--arch", "resnet18", "--num-classes", "10",
                           "--out", tmp_path / "r18.pt")
    assert code == 0, err
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(weights.read_bytes()[:200])
    code, _, err = run_cli(capsys, "import", cut, "--arch", "resnet18", "--num-classes", "10",
                           "--out", tmp_path / "cut.pt")
    assert_one_line_error(code, err, "cut.safetensors", "truncated or not a .safetensors file")
    cut.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # header intact, tensors cut
    with pytest.raises(UserError, match="cut.safetensors"):
        safe_torch_load(cut)
    assert not (tmp_path / "cut.pt").exists()


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."])
def test_ddp_and_compile_prefixes_are_stripped(tmp_path, r18, prefix):
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {prefix + k: v for k, v in r18.items()}, "epoch": 3}, path)
    model, _ = import_weights(path, ModelSpec("resnet18", 10))
    torch.testing.assert_close(model.fc.weight, r18["fc.weight"])


def test_timm_checkpoint_with_ema_takes_the_ema_weights(tmp_path, r18):
    """timm's CheckpointSaver layout: state_dict, state_dict_ema, optimizer, args (an argparse.Namespace)."""
    ema = _shifted(r18, 0.5)
    path = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 9, "arch": "resnet18", "state_dict": r18, "state_dict_ema": ema, "version": 2,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
                "args": argparse.Namespace(model="resnet18", lr=0.1)}, path)
    model, notes = import_weights(path, ModelSpec("resnet18", 10))
    torch.testing.assert_close(model.conv1.weight, ema["conv1.weight"])
    assert any("'state_dict_ema'" in n for n in notes)
    model, notes = import_weights(path, ModelSpec("resnet18", 10), ema=False)
    torch.testing.assert_close(model.conv1.weight, r18["conv1.weight"])
    assert notes == []


def test_torchvision_reference_checkpoint_with_model_ema(capsys, tmp_path, r18):
    """torchvision references/classification/train.py: model, model_ema (AveragedModel: n_averaged + module.)."""
    ema = {"n_averaged": torch.tensor(120), **{f"module.{k}": v for k, v in _shifted(r18, -0.25).items()}}
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": r18, "model_ema": ema, "optimizer": {"state": {}, "param_groups": []},
                "lr_scheduler": {"last_epoch": 3}, "epoch": 3, "args": argparse.Namespace(lr=0.5, model="resnet18")},
               path)
    out = tmp_path / "imported.pt"
    code, stdout, err = run_cli(capsys, "import", path, "--arch", "resnet18", "--num-classes", "10", "--out", out)
    assert code == 0, err
    assert "EMA weights" in stdout
    loaded = safe_torch_load(out)["state_dict"]
    torch.testing.assert_close(loaded["conv1.weight"], r18["conv1.weight"] - 0.25)
    assert "n_averaged" not in loaded
    code, _, err = run_cli(capsys, "import", path, "--arch", "resnet18", "--num-classes", "10", "--no-ema",
                           "--out", out)
    assert code == 0, err
    torch.testing.assert_close(safe_torch_load(out)["state_dict"]["conv1.weight"], r18["conv1.weight"])


# -- output paths --------------------------------------------------------------------------------------------


def test_atomic_output_creates_missing_parents_and_removes_them_on_failure(tmp_path):
    target = tmp_path / "a" / "b" / "model.onnx"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"


def test_full_disk_during_write_is_one_line_and_leaves_nothing(tmp_path):
    target = tmp_path / "new" / "model.engine"
    with pytest.raises(UserError, match="no space left") as info:
        with atomic_output(target) as tmp:
            tmp.write_bytes(b"part")
            raise OSError(errno.ENOSPC, "No space left on device")  # what write(2) returns on a full disk
    assert "model.engine" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_parent_that_is_a_file_is_refused_and_nothing_is_made(tmp_path):
    from edgeresnet.artifacts import check_output_folder, make_output_dir

    blocker = tmp_path / "file"
    blocker.write_text("x")
    for call in (lambda: make_output_dir(blocker / "sub" / "run"), lambda: check_output_folder(blocker / "d"),
                 lambda: atomic_output(blocker / "x.json").__enter__()):
        with pytest.raises(UserError, match="is a file, not a directory"):
            call()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_make_output_dir_removes_what_it_made_when_mkdir_fails(tmp_path, monkeypatch):
    from edgeresnet.artifacts import make_output_dir

    calls = []
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        calls.append(self)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(UserError, match="cannot create directory .*No space left"):
        make_output_dir(tmp_path / "a" / "b" / "c", "--out")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> Path:
    return write_three_digit_classes(tmp_path_factory.mktemp("digits3"))


def test_cv_default_out_is_created_on_a_fresh_checkout(capsys, tmp_path, monkeypatch, digit_folder):
    """Was: 'directory runs does not exist' for the default --out runs/cv."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "cv", "--data", digit_folder, "--folds", "2", "--image-size", "8",
                           "--small-stem", "--epochs", "1", "--max-steps", "1", "--batch-size", "4", "--no-augment",
                           "--no-progress")
    assert code == 0, err
    assert (tmp_path / "runs" / "cv" / "cv.json").exists()


def test_out_under_a_regular_file_is_one_line_for_every_command(capsys, tmp_path, tiny_checkpoint):
    """Was: NotADirectoryError with a traceback (or 'does not exist') depending on the command."""
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    under = blocker / "sub"
    weights = tmp_path / "w.pth"
    torch.save(build_model(ModelSpec("resnet18", 3)).state_dict(), weights)
    cases = [
        (["import", weights, "--arch", "resnet18", "--num-classes", "3", "--out", under / "m.pt"], "--out"),
        (["export", tiny_checkpoint, "--out", under / "m.onnx"], "--out"),
        (["evaluate", tiny_checkpoint, "--limit", "4", "--out", under], "--out"),
        (["evaluate", tiny_checkpoint, "--limit", "4", "--no-plot", "--out", tmp_path / "ev",
          "--json", under / "m.json"], "--json"),
        (["train", "--data", "digits", "--max-steps", "1", "--no-progress", "--out", under / "run"], "--out"),
        (["cv", "--folds", "2", "--no-progress", "--out", under / "cv"], "--out"),
        (["tune", "--space", tmp_path / "space.yaml", "--out", under / "tune"], "--out"),
        (["targets", "show", "agx-orin", "--json", under / "t.json"], "--json"),
    ]
    (tmp_path / "space.yaml").write_text("lr: {type: categorical, choices: [0.05, 0.1]}\n")
    for args, option in cases:
        code, _, err = run_cli(capsys, *args)
        assert_one_line_error(code, err, option, str(blocker))
    assert not (tmp_path / "ev").exists()  # --json refused before the evaluation wrote anything


def test_compare_out_and_benchmark_json_parents_are_created(capsys, tmp_path):
    doc = tmp_path / "r.json"
    doc.write_text(json.dumps(_document(_result([10.0, 10.5, 11.0, 10.2]))))
    code, _, err = run_cli(capsys, "compare", doc, "--out", tmp_path / "a" / "b", "--json", tmp_path / "c" / "t.json")
    assert code == 0, err
    assert (tmp_path / "a" / "b").is_dir() and (tmp_path / "c" / "t.json").exists()
    blocker = tmp_path / "f"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "compare", doc, "--out", blocker / "plots")
    assert_one_line_error(code, err, "--out", "is a file")


# -- image folders -------------------------------------------------------------------------------------------


def _png_claiming(width: int, height: int) -> bytes:
    """A 60-byte PNG whose IHDR claims width x height pixels (PNG spec: signature, IHDR, IDAT, IEND)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_decompression_bomb_is_skipped_like_a_corrupt_image(tmp_path, digit_folder):
    """Was: PIL.Image.DecompressionBombError with a traceback (20000x20000 = 400 M pixels)."""
    import shutil

    from edgeresnet.data import load_data

    data = tmp_path / "data"
    shutil.copytree(digit_folder, data)
    (data / "d1" / "bomb.png").write_bytes(_png_claiming(20000, 20000))
    (data / "d2" / "big.png").write_bytes(_png_claiming(10000, 10000))  # over MAX_IMAGE_PIXELS: only a warning in PIL
    with pytest.warns(UserWarning, match=r"skipped 2 corrupt or non-image file\(s\): d1/bomb.png, d2/big.png"):
        splits = load_data(str(data), 8)
    assert sum(len(v) for v in splits.splits.values()) == 24


def test_folder_of_bombs_only_is_an_error_naming_them(tmp_path):
    from edgeresnet.data import load_data

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "x.png").write_bytes(_png_claiming(20000, 20000))
    with pytest.raises(UserError, match=r"class folder 'a' has no readable images \(1 unreadable, e.g. a/x.png\)"):
        load_data(str(tmp_path), 8)


def test_train_cli_skips_the_bomb(capsys, tmp_path, digit_folder):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(digit_folder, data)
    (data / "d0" / "bomb.png").write_bytes(_png_claiming(20000, 20000))
    code, stdout, err = run_cli(capsys, "train", "--data", data, "--epochs", "1", "--max-steps", "1", "--image-size",
                                "8", "--small-stem", "--batch-size", "8", "--no-progress", "--out", tmp_path / "run")
    assert code == 0, err
    assert "skipped 1 corrupt or non-image file(s): d0/bomb.png" in stdout


# -- targets and results files -------------------------------------------------------------------------------


def test_target_files_that_are_not_targets_name_the_option(capsys, tmp_path):
    cases = {"bin.yaml": b"\xff\xfe\x00\x01", "list.yaml": b"[1, 2]\n", "recipe.yaml": b"epochs: 3\nlr: 0.1\n",
             "big.yaml": b"a" * (2 << 20)}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        code, _, err = run_cli(capsys, "build", tmp_path / "m.onnx", "--target", tmp_path / name, "--dry-run",
                               "--out", tmp_path / "out")
        assert_one_line_error(code, err, f"--target {tmp_path / name}")
    (tmp_path / "dir.yaml").mkdir()
    code, _, err = run_cli(capsys, "targets", "show", tmp_path / "dir.yaml")
    assert_one_line_error(code, err, "NAME", "is a directory")
    assert not (tmp_path / "out").exists()


def _result(samples: list[float]) -> dict:
    from edgeresnet.bench import stats

    return {"model": "resnet18", "artifact": "r18.onnx", "artifact_sha256": "", "target": "cpu", "backend": "ort",
            "precision": "fp32", "batch": 1, "latency_ms": stats.summarize(samples, resamples=50),
            "throughput_ips": 100.0, "iterations": len(samples), "duration_s": 1.0, "gpu_compute_ms": None,
            "h2d_ms": None, "d2h_ms": None, "accuracy": None, "warnings": []}


def _document(*results: dict) -> dict:
    return {"schema": "edgeresnet.benchmark/1", "created": "2026-01-01T00:00:00+00:00",
            "tool": {"edgeresnet": "0.1.0"},
            "environment": {"host": {"cpu": "x", "cores": 2, "machine": "x86_64", "system": "Linux"},
                            "versions": {}, "gpu": None, "jetson": None, "target": "cpu", "power_mode": None,
                            "tensorrt": None},
            "results": list(results)}


def _bad_documents() -> dict[str, str]:
    good = _result([10.0, 10.5, 11.0, 10.2, 10.4])
    nan = json.loads(json.dumps(good))
    nan["latency_ms"]["median"] = float("nan")
    negative = json.loads(json.dumps(good))
    negative["latency_ms"]["min"] = -1.0
    return {"empty": json.dumps(_document()), "nan": json.dumps(_document(nan)),
            "negative": json.dumps(_document(negative))}


@pytest.mark.parametrize("case, fragment", [("empty", "holds no measurement"), ("nan", "not a finite number"),
                                            ("negative", "is negative")])
def test_results_files_with_impossible_content_are_refused(capsys, tmp_path, case, fragment):
    bad = tmp_path / f"{case}.json"
    bad.write_text(_bad_documents()[case])
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_document(_result([10.0, 10.5, 11.0, 10.2, 10.4]))))
    code, _, err = run_cli(capsys, "compare", good, bad)
    assert_one_line_error(code, err, f"RESULTS {bad}", fragment)
    code, _, err = run_cli(capsys, "regress", "--baseline", good, "--current", bad)
    assert_one_line_error(code, err, f"--current {bad}", fragment)


def test_benchmark_run_dir_results_under_a_regular_file_is_one_line(tmp_path, tmp_path_factory):
    """Was: NotADirectoryError from ``mkdir(parents=True)`` after the whole benchmark had run."""
    import shutil

    from bench_fixtures import bench_assets
    from edgeresnet.bench.rundir import benchmark_run_dir

    assets = bench_assets(tmp_path_factory)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(assets["onnx"], run / assets["onnx"].name)
    shutil.copy(str(assets["onnx"]) + ".json", run / (assets["onnx"].name + ".json"))
    blocker = tmp_path / "plain"
    blocker.write_text("x")
    with pytest.raises(UserError, match="is a file, not a directory"):
        benchmark_run_dir(run, data=None, batches=(1,), duration_s=0.02, warmup_ms=0, warmup_iterations=1,
                          min_iterations=2, target="host-cpu", out=blocker / "b" / "results.json", report=None,
                          progress=False)
    outcome = benchmark_run_dir(run, data=None, batches=(1,), duration_s=0.02, warmup_ms=0, warmup_iterations=1,
                                min_iterations=2, target="host-cpu", out=tmp_path / "new" / "dir" / "results.json",
                                report=None, progress=False)
    assert outcome["results"].exists()


def test_json_path_that_cannot_be_written_fails_before_the_work(capsys, tmp_path, tiny_checkpoint):
    """Was: the command did its work (export, pruning, a build ...) and only then died on --json."""
    blocker = tmp_path / "plain"
    blocker.write_text("x")
    bad_json = blocker / "report.json"
    (tmp_path / "space.yaml").write_text("lr: {type: categorical, choices: [0.05, 0.1]}\n")
    cases = [
        ["export", tiny_checkpoint, "--out", tmp_path / "m.onnx"],
        ["verify", tiny_checkpoint, tiny_checkpoint],
        ["prune", tiny_checkpoint, "--flops", "0.5", "--out", tmp_path / "p.pt"],
        ["distill", "--teacher", tiny_checkpoint, "--student", "resnet18", "--out", tmp_path / "d.pt"],
        ["calibrate", tmp_path / "m.onnx", "--out", tmp_path / "q.onnx"],
        ["qat", tiny_checkpoint, "--out", tmp_path / "qat.onnx"],
        ["build", tmp_path / "m.onnx", "--target", "agx-orin", "--dry-run", "--out", tmp_path / "build"],
        ["cv", "--folds", "2", "--out", tmp_path / "cv"],
        ["ensemble", tiny_checkpoint, tiny_checkpoint],
        ["tune", "--space", tmp_path / "space.yaml", "--out", tmp_path / "tune"],
        ["train", "--max-steps", "1", "--out", tmp_path / "run"],
        ["import", tiny_checkpoint, "--arch", "resnet18", "--num-classes", "10", "--small-stem",
         "--out", tmp_path / "i.pt"],
    ]
    for args in cases:
        code, _, err = run_cli(capsys, *args, "--json", bad_json)
        assert_one_line_error(code, err, "--json", str(blocker))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "space.yaml"]
