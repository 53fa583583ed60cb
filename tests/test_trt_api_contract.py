"""Every TensorRT name our code uses exists in the real Python bindings of each release on its code path.

The name lists in ``edgeresnet/trt/api/trt-<ver>.json`` were extracted from the real bindings wheels
(``tools/extract_trt_api.py``). Names come from two places: the code itself (AST scan of the modules that
call TensorRT, which must all be declared in ``adapter.NAMES_USED``) and the build plans (enum members
the adapter looks up by name, from ``plan_build`` over a matrix of requests per release).
"""

from __future__ import annotations

import ast
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from edgeresnet.errors import UserError
from edgeresnet.trt import adapter
from edgeresnet.trt.features import TrtFeatures
from edgeresnet.trt.plan import BuildSpec, DeviceCaps, plan_build

ROOT = Path(__file__).resolve().parents[1]
API_DIR = ROOT / "edgeresnet" / "trt" / "api"
ADAPTER = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "edgeresnet" / "trt" / "adapter").glob("*.py"))
SCANNED = [*ADAPTER, "edgeresnet/trt/rtx.py", "edgeresnet/trt/runtime.py", "edgeresnet/runners/trt_runner.py"]
RELEASES = {"8.6": "8.6.1", "10.0": "10.0.1", "10.3": "10.3.0", "10.7": "10.7.0.post1", "10.13": "10.13.3.9",
            "11.0": "11.0.0.114", "11.4": "11.4.0.106", "rtx-1.7": "1.7.1.116"}


def _load(name: str) -> dict[str, Any]:
    return json.loads((API_DIR / f"trt-{name}.json").read_text(encoding="utf-8"))


APIS = {name: _load(name) for name in RELEASES}


def _version(name: str) -> tuple[tuple[int, ...], str]:
    data = APIS[name]
    numbers = tuple(int(n) for n in re.findall(r"\d+", data["version"].split("post")[0])[:3])
    return numbers, "rtx" if name.startswith("rtx-") else "tensorrt"


def has(api: dict[str, Any], dotted: str) -> bool:
    """``Class``, ``Class.attr``, ``Enum.MEMBER``, ``Outer.Inner.MEMBER`` or a module function."""
    if dotted in api["classes"] or dotted in api["enums"] or dotted in api["functions"]:
        return True
    owner, _, attr = dotted.rpartition(".")
    return attr in api["classes"].get(owner, []) or attr in api["enums"].get(owner, [])


# -- the lists themselves ---------------------------------------------------------------------------


def test_the_committed_lists_are_the_releases_we_plan_for() -> None:
    assert sorted(p.stem for p in API_DIR.glob("trt-*.json")) == sorted(f"trt-{n}" for n in RELEASES)
    for name, version in RELEASES.items():
        data = APIS[name]
        assert data["version"] == version
        assert len(data["classes"]) > 100 and len(data["enums"]) > 50, name
        assert data["source"]["requirement"].endswith(version)


# facts checked on the real binding wheels (tensorrt-bindings 8.6.1, tensorrt-cu12-bindings 10.0.1-11.4.0.106,
# imported over stub libnvinfer libraries by tools/extract_trt_api.py): a regression guard for the extractor
FACTS = {
    "IExecutionContext.execute_async_v3": {"8.6", "10.0", "10.3", "10.7", "10.13", "11.0", "11.4", "rtx-1.7"},
    "IExecutionContext.execute_async_v2": {"8.6"},
    "Builder.build_engine": {"8.6"},
    "Builder.platform_has_fast_int8": {"8.6", "10.0", "10.3", "10.7", "10.13"},
    "IBuilderConfig.max_workspace_size": {"8.6"},
    "IBuilderConfig.int8_calibrator": {"8.6", "10.0", "10.3", "10.7", "10.13"},
    "IInt8EntropyCalibrator2": {"8.6", "10.0", "10.3", "10.7", "10.13"},
    "BuilderFlag.FP16": {"8.6", "10.0", "10.3", "10.7", "10.13"},
    "BuilderFlag.GPU_FALLBACK": {"8.6", "10.0", "10.3", "10.7", "10.13", "11.0", "11.4", "rtx-1.7"},
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED": {"10.0", "10.3", "10.7", "10.13", "11.0", "11.4", "rtx-1.7"},
    "NetworkDefinitionCreationFlag.EXPLICIT_BATCH": {"8.6", "10.0", "10.3", "10.7", "10.13"},
    "ICudaEngine.num_bindings": {"8.6"},
    "ParserError.node_name": {"10.0", "10.3", "10.7", "10.13", "11.0", "11.4", "rtx-1.7"},
    "HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY": {"10.13", "11.0", "11.4", "rtx-1.7"},
    "IBuilderConfig.set_compute_capability": {"rtx-1.7"},
}


@pytest.mark.parametrize("name", sorted(FACTS))
def test_extracted_lists_agree_with_the_documented_api_table(name: str) -> None:
    assert {release for release in RELEASES if has(APIS[release], name)} == FACTS[name]


def test_strongly_typed_flag_bit_moved_in_11() -> None:
    """Why flags are looked up by name: STRONGLY_TYPED is 1 << 1 in 10.x and 1 << 0 in 11.x."""
    values = {n: APIS[n]["enum_values"]["NetworkDefinitionCreationFlag"].get("STRONGLY_TYPED") for n in RELEASES}
    assert values == {"8.6": None, "10.0": 1, "10.3": 1, "10.7": 1, "10.13": 1, "11.0": 0, "11.4": 0, "rtx-1.7": 0}


# -- names in the code ------------------------------------------------------------------------------


def _chain(node: ast.AST) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


def used_names(path: Path) -> set[str]:
    """``trt.X[.Y]`` chains, and ``var.attr`` / ``self.var.attr`` for variables named in VARIABLE_CLASSES."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Attribute):
            continue
        chain = _chain(node)
        if not chain or chain[-1].startswith("__"):
            continue
        if chain[0] == "trt" and len(chain) >= 2:
            found.add(".".join(chain[1:]))
        elif len(chain) == 2 and chain[0] in adapter.VARIABLE_CLASSES:
            found.add(f"{adapter.VARIABLE_CLASSES[chain[0]]}.{chain[1]}")
        elif len(chain) == 3 and chain[0] == "self" and chain[1] in adapter.VARIABLE_CLASSES:
            found.add(f"{adapter.VARIABLE_CLASSES[chain[1]]}.{chain[2]}")
    return found


def _declared() -> set[str]:
    return {name for names in adapter.NAMES_USED.values() for name in names}


def test_the_scan_sees_the_adapter_calls() -> None:
    """Guard against a scan that finds nothing: known calls of each file are found."""
    assert {"Builder.build_serialized_network", "IBuilderConfig.set_flag", "DeviceType.DLA",
            "ParserError.node_name"} <= set().union(*(used_names(ROOT / path) for path in ADAPTER))
    assert {"IBuilderConfig.set_compute_capability", "NetworkDefinitionCreationFlag.STRONGLY_TYPED"} <= used_names(
        ROOT / "edgeresnet/trt/rtx.py")
    assert {"IExecutionContext.execute_async_v3", "IExecutionContext.set_tensor_address",
            "IExecutionContext.set_input_shape", "TensorIOMode.INPUT"} <= used_names(ROOT / "edgeresnet/trt/runtime.py")


@pytest.mark.parametrize("path", SCANNED)
def test_every_name_used_is_declared(path: str) -> None:
    declared = _declared()
    covered = declared | {d.rsplit(".", 1)[0] for d in declared if "." in d}  # "DeviceType" via "DeviceType.DLA"
    assert sorted(used_names(ROOT / path) - covered) == []


def test_groups_have_rules() -> None:
    assert set(adapter.NAMES_USED) == set(adapter.GROUP_APPLIES)


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_declared_names_exist_in_each_release_they_apply_to(release: str) -> None:
    version, flavor = _version(release)
    missing = [f"{group}: {name}" for group, names in adapter.NAMES_USED.items()
               if adapter.GROUP_APPLIES[group](version, flavor) for name in names if not has(APIS[release], name)]
    assert missing == []


def test_groups_that_must_not_apply_really_lack_their_names() -> None:
    """The group rules are not just permissive: where a group does not apply, its key names are gone."""
    assert not has(APIS["11.0"], "BuilderFlag.FP16") and not adapter.GROUP_APPLIES["weak"]((11, 0, 0), "tensorrt")
    assert not has(APIS["8.6"], "ParserError.node_name")
    assert not adapter.GROUP_APPLIES["parser_node_name"]((8, 6, 1), "tensorrt")
    assert not has(APIS["rtx-1.7"], "IBuilderConfig.int8_calibrator")
    assert not adapter.GROUP_APPLIES["calibrator"]((1, 7, 1), "rtx")


def test_only_the_adapter_imports_tensorrt() -> None:
    pattern = re.compile(r"^\s*(import|from)\s+tensorrt|import_module\(\s*[\"']tensorrt", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "edgeresnet").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []  # the adapter's loader and rtx.py import by name from a tuple, never at module top


# -- names from the build plans ---------------------------------------------------------------------

A100 = DeviceCaps("NVIDIA A100", (8, 0))
AGX_ORIN = DeviceCaps("Jetson AGX Orin", (8, 7), dla_cores=2, is_jetson=True)


def _plans(release: str, tmp: Path) -> list[Any]:
    version, flavor = _version(release)
    cache = tmp / "calib.cache"
    cache.write_bytes(b"cache")
    onnx = str(tmp / "m.onnx")
    if flavor == "rtx":
        variants = [(TrtFeatures.for_rtx(version), A100)]
    else:
        variants = [(TrtFeatures.for_version(version), A100),
                    (TrtFeatures.for_version(version, platform="jetson", board="agx-orin"), AGX_ORIN)]
    requests = [
        dict(precision=p, batch=b, input_shape=shape, onnx_has_qdq=q, typing=t, dla_core=d, gpu_fallback=g,
             calib_cache=str(cache) if c else None, calib_cache_exists=c, calibrator=kind, workspace_mib=256,
             timing_cache=str(tmp),
             hardware_compatibility=hc, version_compatible=vc, builder_optimization_level=3)
        for p, (b, shape), q, t, (d, g), (c, kind), hc, vc in itertools.product(
            ("fp32", "fp16", "int8", "best"), (((1, 1, 1), (1, 3, 32, 32)), ((1, 4, 8), (None, 3, 32, 32))),
            (False, True), ("auto", "strong", "weak"), ((None, False), (0, False), (1, True)),
            ((False, "entropy2"), (True, "entropy2"), (True, "minmax")),
            (None, "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY"), (False, True))
    ]
    plans = []
    for features, device in variants:
        for request in requests:
            try:
                plans.append(plan_build(BuildSpec(onnx=onnx, **request), features, device))  # type: ignore[arg-type]
            except UserError:
                continue
    return plans


def _plan_names(plan: Any) -> set[str]:
    names = set()
    for step in plan.steps:
        if step.op in adapter.PLAN_ENUMS:
            enum, arg = adapter.PLAN_ENUMS[step.op]
            names.add(f"{enum}.{step.args[arg]}")
        elif step.op == "create_network":
            if step.args["strongly_typed"]:
                names.add("NetworkDefinitionCreationFlag.STRONGLY_TYPED")
            if step.args["explicit_batch_flag"]:
                names.add("NetworkDefinitionCreationFlag.EXPLICIT_BATCH")
        elif step.op == "dla":
            names.add("DeviceType.DLA")
        elif step.op == "calibrator":
            names.add({"entropy2": "IInt8EntropyCalibrator2", "minmax": "IInt8MinMaxCalibrator"}[step.args["kind"]])
        elif step.op == "max_workspace":
            names.add("IBuilderConfig.max_workspace_size")
    return names


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_every_name_a_plan_asks_for_exists_in_that_release(release: str, tmp_path: Path) -> None:
    plans = _plans(release, tmp_path)
    assert len(plans) > 20  # the matrix really produced plans
    asked = set().union(*(_plan_names(p) for p in plans))
    version, flavor = _version(release)
    if flavor == "tensorrt" and version < (11,):  # the weakly typed paths really were exercised
        assert {"BuilderFlag.INT8", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator"} <= asked
    assert {n for n in asked if not has(APIS[release], n)} == set()
    # and every such name is declared for the adapter's table too
    declared = _declared()
    assert {n for n in asked if n not in declared and "." in n} == set()


def test_fake_module_offers_only_the_release_names() -> None:
    from fake_trt import FakeTrt

    with pytest.raises(AttributeError):
        _ = FakeTrt("11.0").BuilderFlag.FP16
    with pytest.raises(AttributeError):
        _ = FakeTrt("10.3").IInt8LegacyCalibrator2
    assert int(FakeTrt("10.3").NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 1
