"""Target files: every shipped target loads, agrees with the TensorRT feature table, and bad files fail
with one line naming the file and the key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from edgeresnet.errors import UserError
from edgeresnet.trt.features import max_onnx_opset, parse_version
from edgeresnet.trt.targets import list_targets, load_target, parse_target, target_names, targets_dir

EXPECTED = {
    "jetson-nano", "jetson-tx2", "xavier-nx", "agx-xavier", "orin-nano", "orin-nx", "agx-orin",
    "desktop-t4", "desktop-ampere", "desktop-ada", "desktop-h100", "host-cpu",
}
REPO_TARGETS = Path(__file__).resolve().parents[1] / "targets"


def test_all_targets_load_and_are_the_expected_set():
    targets = list_targets()
    assert {t.name for t in targets} == EXPECTED
    assert target_names() == sorted(EXPECTED)
    kinds = [t.kind for t in targets]
    assert kinds == sorted(kinds, key=["jetson", "desktop", "cpu"].index)  # Jetson first, CPU last


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_target_facts_are_consistent(name):
    t = load_target(name)
    assert t.name == name and t.description
    if t.kind == "cpu":
        assert t.backend == "ort" and t.tensorrt is None and t.compute_capability is None
        return
    assert t.backend == "trt"
    lo, _hi = t.trt_range
    # the opset ceiling stated in the file is the parser's for the oldest TensorRT the target runs
    assert t.max_onnx_opset == max_onnx_opset(tuple((list(lo) + [0, 0])[:3]))
    # the package needs Python >= 3.10; older boards get the trtexec script
    if t.kind == "jetson":
        py = tuple(int(p) for p in t.python.split("."))
        assert t.install_path == ("package" if py >= (3, 10) else "trtexec")
        assert t.jetpack
    for ref in t.reference_latencies:
        assert ref.value > 0 and ref.unit == "ms" and ref.batch >= 1 and ref.source
    features = t.features()
    assert features.platform == ("jetson" if t.kind == "jetson" else "desktop")


def test_board_capabilities_from_the_notes():
    nano, tx2, nx, xavier = (load_target(n) for n in ("jetson-nano", "jetson-tx2", "xavier-nx", "agx-xavier"))
    assert (nano.int8, nano.fp16, nano.dla_cores, nano.tensorrt, nano.python) == (False, True, 0, "8.2.1", "3.6")
    assert tx2.int8 is False and tx2.compute_capability == "6.2"
    assert (nx.tensorrt, nx.dla_cores, nx.python, nx.install_path) == ("8.5.2", 2, "3.8", "trtexec")
    assert xavier.compute_capability == "7.2"
    orin = load_target("agx-orin")
    assert (orin.tensorrt, orin.compute_capability, orin.dla_cores, orin.install_path) == ("10.3.0", "8.7", 2, "package")
    assert load_target("orin-nano").dla_cores == 0
    # MLPerf v3.0 AGX Orin SingleStream p90 (mlcommons/inference_results_v3.0 closed/NVIDIA/results/Orin_TRT/resnet50)
    assert any(r.value == 0.633 and "inference_results_v3.0" in r.source for r in orin.reference_latencies)
    assert load_target("orin-nano").reference_latencies == ()  # none published: never invented


def test_load_by_path_and_by_env_dir(tmp_path, monkeypatch):
    path = REPO_TARGETS / "agx-orin.yaml"
    assert load_target(str(path)).name == "agx-orin"
    shutil.copy(path, tmp_path / "agx-orin.yaml")
    monkeypatch.setenv("EDGERESNET_TARGETS_DIR", str(tmp_path))
    assert targets_dir() == tmp_path
    assert target_names() == ["agx-orin"]
    with pytest.raises(UserError, match="unknown target"):
        load_target("jetson-nano")


def test_unknown_target_names_the_choices_and_a_close_match():
    with pytest.raises(UserError) as err:
        load_target("agx-orn")
    msg = str(err.value)
    assert "--target agx-orn: unknown target (did you mean 'agx-orin'?)" in msg and "jetson-nano" in msg
    assert "\n" not in msg


def test_env_dir_that_does_not_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGERESNET_TARGETS_DIR", str(tmp_path / "nope"))
    with pytest.raises(UserError, match="EDGERESNET_TARGETS_DIR"):
        list_targets()


def _orin() -> dict:
    return yaml.safe_load((REPO_TARGETS / "agx-orin.yaml").read_text())


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d.update(dla_core=2), "unknown key 'dla_core' (did you mean 'dla_cores'?)"),
        (lambda d: d.pop("cuda"), "missing key 'cuda'"),
        (lambda d: d.update(fp16="yes"), "key 'fp16' must be true/false, got str"),
        (lambda d: d.update(dla_cores=True), "key 'dla_cores' must be an integer, got bool"),
        (lambda d: d.update(max_onnx_opset="20"), "key 'max_onnx_opset' must be an integer or null, got str"),
        (lambda d: d.update(name="orin"), "key 'name' is 'orin' but the file is agx-orin.yaml"),
        (lambda d: d.update(kind="phone"), "key 'kind' must be one of jetson, desktop, cpu"),
        (lambda d: d.update(install_path="trtexec"), "key 'install_path' must be 'package' for Python 3.10"),
        (lambda d: d.update(tensorrt="10.3-10.7"), "must be one version on a jetson target"),
        (lambda d: d.update(compute_capability="sm87"), "key 'compute_capability' must look like 8.7"),
        (lambda d: d["reference_latencies"][0].pop("source"), "reference_latencies[0]: missing key 'source'"),
        (lambda d: d["reference_latencies"][0].update(value=-1), "reference_latencies[0]: 'value' must be > 0"),
        (lambda d: d["alt_stacks"][0].update(trt="8.5"), "alt_stacks[0]: unknown key 'trt'"),
        (lambda d: d.update(backend="ort"), "key 'backend' must be 'trt' for a jetson target"),
    ],
)
def test_strict_validation_one_line_naming_file_and_key(tmp_path, mutate, expected):
    data = _orin()
    mutate(data)
    path = tmp_path / "agx-orin.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError) as err:
        load_target(str(path))
    msg = str(err.value)
    assert str(path) in msg and expected in msg, msg
    assert "\n" not in msg


def test_cpu_target_must_not_claim_a_gpu(tmp_path):
    data = yaml.safe_load((REPO_TARGETS / "host-cpu.yaml").read_text())
    data["tensorrt"] = "10.3"
    with pytest.raises(UserError, match="key 'tensorrt' must be null for a cpu target"):
        parse_target(data, tmp_path / "host-cpu.yaml")


def test_invalid_yaml_and_non_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match=r"bad.yaml: not valid YAML at line \d"):
        load_target(str(bad))
    bad.write_text("- just\n- a list\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_target(str(bad))


def test_jetson_version_is_fixed_by_jetpack():
    orin = load_target("agx-orin")
    assert orin.resolve_stack().tensorrt == "10.3.0"
    assert orin.resolve_stack("10.3").tensorrt == "10.3.0"
    old = orin.resolve_stack("8.5")
    assert (old.jetpack, old.tensorrt, old.python) == ("5.1.2", "8.5.2", "3.8")
    new = orin.resolve_stack("11.4.1")
    assert new.jetpack == "7.2.2"
    with pytest.raises(UserError, match=r"--trt-version 10.13: agx-orin runs TensorRT 10.3.0 \(JetPack 6.2\)"):
        orin.resolve_stack("10.13")
    nano = load_target("jetson-nano")
    with pytest.raises(UserError, match="jetson-nano runs TensorRT 8.2.1"):
        nano.features("10.3")


def test_desktop_range_and_default():
    ampere = load_target("desktop-ampere")
    assert ampere.trt_range == ((8, 6), (11, 4))
    assert ampere.default_trt_version == "11.4"
    assert ampere.features("10.13").version == (10, 13, 0)
    with pytest.raises(UserError, match="supports TensorRT 8.6-11.4"):
        ampere.resolve_stack("8.5")
    with pytest.raises(UserError, match="has no TensorRT"):
        load_target("host-cpu").resolve_stack()


def test_to_dict_round_trips_the_facts():
    data = load_target("agx-xavier").to_dict()
    assert data["name"] == "agx-xavier" and data["default_trt_version"] == "8.5.2"
    assert data["reference_latencies"][0]["source"].startswith("mlcommons")
    assert parse_version(data["tensorrt"]) == (8, 5, 2)
