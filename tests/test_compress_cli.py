"""``edgeresnet prune`` / ``distill`` end to end on real digits images, and their one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import write_digits_folder
from edgeresnet.artifacts import read_manifest, sha256_file
from edgeresnet.cli.main import main
from edgeresnet.models import ModelSpec, build_model, load_checkpoint, make_checkpoint, model_from_checkpoint

SIZE = 32  # the recipe default: standard stem at 32 px (cheap: 37 MMACs)


pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small ImageFolder of real digits (6 per class), a 10-class and a 7-class checkpoint."""

    from edgeresnet.data import load_data

    root = tmp_path_factory.mktemp("compress_cli")
    folder = root / "digits6"
    write_digits_folder(folder, 6)
    preprocess = load_data("digits", SIZE).preprocess.to_dict()

    def checkpoint(name: str, classes: int, seed: int) -> Path:
        torch.manual_seed(seed)
        spec = ModelSpec("resnet18", classes)
        pre = dict(preprocess, class_names=[str(i) for i in range(classes)])
        path = root / name
        torch.save(make_checkpoint(build_model(spec).eval(), spec, pre), path)
        return path

    return {"root": root, "data": str(folder), "model": checkpoint("model.pt", 10, 0),
            "teacher7": checkpoint("teacher7.pt", 7, 1)}


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.mark.parametrize("extra, fragment", [
    (["--ratio", "1.5"], "--ratio 1.5: must be between 0 and 1"),
    (["--ratio", "0"], "--ratio 0.0: must be between 0 and 1"),
    (["--ratio", "0.5", "--granularity", "0"], "--granularity 0: must be a positive number"),
    (["--ratio", "0.5", "--bn-images", "-1"], "--bn-images -1: must be 0 (off) or more"),
    (["--ratio", "0.5", "--finetune-images", "-1"], "--finetune-images -1: must be 0 (all) or more"),
    (["--ratio", "0.5", "--flops", "0.5"], "alternatives"),
    (["--sweep", "0.2,1.2"], "--sweep 0.2,1.2: ratio 1.2 is outside (0, 1)"),
    (["--ratio", "0.5", "--finetune-epochs", "1", "--teacher", "TEACHER7"],
     "teacher has 7 classes but the model has 10"),
])
def test_prune_refuses_bad_input_in_one_line_and_writes_nothing(world, capsys, extra, fragment):
    out = world["root"] / "refused.pt"
    extra = [str(world["teacher7"]) if x == "TEACHER7" else x for x in extra]
    code, _out, err = _run(["prune", str(world["model"]), "--out", str(out), "--data", world["data"], *extra], capsys)
    assert code == 2 and fragment in err
    assert err.startswith("error: ") and err.strip().count("\n") == 0 and "Traceback" not in err
    assert not out.exists() and not Path(str(out) + ".json").exists()


def test_distill_refuses_teacher_with_other_class_count(world, capsys):
    out = world["root"] / "refused_d.pt"
    code, _out, err = _run(["distill", "--teacher", str(world["teacher7"]), "--student", str(world["model"]),
                            "--out", str(out), "--data", world["data"], "--epochs", "1"], capsys)
    assert code == 2 and "teacher has 7 classes but the student has 10" in err and err.strip().count("\n") == 0
    assert not out.exists()


def test_prune_with_kd_finetune_writes_smaller_checkpoint_and_manifest(world, capsys):
    out = world["root"] / "pruned.pt"
    code, stdout, _err = _run(["prune", str(world["model"]), "--out", str(out), "--ratio", "0.5", "--data",
                               world["data"], "--finetune-epochs", "1", "--finetune-images", "20", "--exporter",
                               "torchscript", "--json", "-"],
                              capsys)
    assert code == 0
    report = json.loads(stdout)
    assert report["params"]["after"] < 0.3 * report["params"]["before"]
    assert report["onnx_bytes"]["after"] < 0.4 * report["onnx_bytes"]["before"]
    assert report["finetune"]["epochs"] == 1 and report["finetune"]["kd"]["alpha"] == 0.7
    assert report["finetune"]["train_images"] == 20  # 2 of the 4 training images of every class
    assert report["teacher"] == "source (unpruned)"
    assert {"before", "after", "pruned_raw", "pruned_no_finetune", "drop"} <= set(report["accuracy"])
    assert report["bn_recalibration_images"] == 40  # the whole (small) training split
    model, spec = model_from_checkpoint(load_checkpoint(out), out)
    assert spec.num_classes == 10 and model(torch.zeros(2, 3, SIZE, SIZE)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == report["params"]["after"]
    manifest = read_manifest(out, required=True)
    assert manifest["inputs"]["source"]["sha256"] == sha256_file(world["model"])
    assert manifest["sha256"] == sha256_file(out)
    assert manifest["settings"]["ratio"] == 0.5 and manifest["settings"]["data"] == world["data"]
    layers = {row["layer"]: row for row in manifest["pruning"]["layers"]}
    assert layers["layer1.0.conv1"]["out"] == [64, 32] and layers["fc"]["out"] == [10, 10]


def test_sweep_writes_pareto_table_and_plot(world, capsys):
    out = world["root"] / "sweep"
    code, stdout, _err = _run(["prune", str(world["model"]), "--out", str(out), "--sweep", "0.6", "--data",
                               world["data"], "--exporter", "torchscript", "--latency-rounds", "1",
                               "--latency-duration", "0.05", "--json", "-"], capsys)
    assert code == 0
    report = json.loads(stdout)
    rows = report["rows"]
    assert [r["ratio"] for r in rows] == [0.0, 0.6]
    assert rows[0]["gmacs"] > 2 * rows[1]["gmacs"] and all(r["latency_ms"] > 0 for r in rows)
    assert rows[1]["pareto"]  # the smallest model is always on the front (nothing is cheaper)
    for name in ("sweep.md", "sweep.png", "sweep.json", "pruned_r0.60.pt", "pruned_r0.60.pt.json"):
        assert (out / name).stat().st_size > 0
    assert "| 0.60 |" in (out / "sweep.md").read_text()
    assert read_manifest(out / "sweep.png", required=True)["inputs"]["source"]["sha256"] == sha256_file(world["model"])


def test_distill_into_pruned_student_with_feature_loss(world, capsys):
    student = world["root"] / "student.pt"
    assert _run(["prune", str(world["model"]), "--out", str(student), "--ratio", "0.5", "--data", world["data"],
                 "--exporter", "torchscript"], capsys)[0] == 0
    out = world["root"] / "distilled.pt"
    code, stdout, _err = _run(["distill", "--teacher", str(world["model"]), "--student", str(student), "--out",
                               str(out), "--data", world["data"], "--epochs", "1", "--feature-loss", "--json", "-"],
                              capsys)
    assert code == 0
    report = json.loads(stdout)
    assert {"teacher", "student_alone", "distilled", "kd_gain"} <= set(report)
    assert set(report["adapters"]) == {"layer1", "layer2", "layer3", "layer4"}
    model, _spec = model_from_checkpoint(load_checkpoint(out), out)  # adapters are not part of the student
    assert sum(p.numel() for p in model.parameters()) == report["student"]["params"]
    manifest = read_manifest(out, required=True)
    assert manifest["inputs"]["teacher"]["sha256"] == sha256_file(world["model"])
    assert manifest["settings"]["feature_loss"] is True


def test_sweep_levels_and_pareto_front():
    from edgeresnet.compress.prune_sweep import pareto_flags, parse_levels
    from edgeresnet.errors import UserError

    assert parse_levels("0.6, 0.2,0.4,0.2") == [0.2, 0.4, 0.6]
    for bad in ("0.2,x", "", "0.5,1"):
        with pytest.raises(UserError, match="--sweep"):
            parse_levels(bad)
    rows = [{"top1": 99.0, "latency_ms": 10.0, "gmacs": 1.0}, {"top1": 98.0, "latency_ms": 6.0, "gmacs": 0.5},
            {"top1": 97.0, "latency_ms": 7.0, "gmacs": 0.6}, {"top1": 98.0, "latency_ms": 6.0, "gmacs": 0.5}]
    assert pareto_flags(rows) == [True, True, False, True]  # ties do not dominate each other
