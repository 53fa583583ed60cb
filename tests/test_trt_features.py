"""The TensorRT feature table, release by release (sources in edgeresnet/trt/features.py)."""

from __future__ import annotations

import pytest

from edgeresnet.errors import UserError
from edgeresnet.trt.features import TrtFeatures, max_onnx_opset, parse_version

F = TrtFeatures.for_version


@pytest.mark.parametrize(
    "text, expected",
    [("10.3", (10, 3, 0)), ("10.3.0.30", (10, 3, 0)), ("8.2.1", (8, 2, 1)), ((11, 4), (11, 4, 0)), ("v8.5", (8, 5, 0))],
)
def test_parse_version(text, expected):
    assert parse_version(text) == expected


@pytest.mark.parametrize("bad", ["ten", "10.x", "", "1.2.3.4.5"])
def test_parse_version_rejects_garbage(bad):
    with pytest.raises(UserError, match="not a version"):
        parse_version(bad)


def test_too_old_release_is_refused():
    with pytest.raises(UserError, match="older than 8.2.0"):
        F("8.0.1")


# version -> (explicit_batch_default, explicit_batch_flag, weak_typing, calibrators, strongly_typed_flag,
#             strongly_typed_recommended, strongly_typed_mandatory, v3_execution, memory_pools, max_workspace_size)
TABLE = {
    "8.2.1": (False, True, True, True, False, False, False, False, False, True),
    "8.4.3": (False, True, True, True, False, False, False, False, True, True),
    "8.5.2": (False, True, True, True, False, False, False, True, True, True),
    "8.6.1": (False, True, True, True, False, False, False, True, True, True),
    "9.1.0": (False, True, True, True, True, False, False, True, True, True),
    "10.0.1": (True, False, True, True, True, False, False, True, True, False),
    "10.3.0": (True, False, True, True, True, False, False, True, True, False),
    "10.12.0": (True, False, True, True, True, True, False, True, True, False),
    "11.0.0": (True, False, False, False, True, True, True, True, True, False),
    "11.4.1": (True, False, False, False, True, True, True, True, True, False),
}


@pytest.mark.parametrize("version", sorted(TABLE))
def test_feature_table(version):
    f = F(version)
    got = (f.explicit_batch_default, f.explicit_batch_flag, f.weak_typing, f.calibrators, f.strongly_typed_flag,
           f.strongly_typed_recommended, f.strongly_typed_mandatory, f.v3_execution, f.memory_pools,
           f.max_workspace_size)
    assert got == TABLE[version]
    assert f.build_serialized_network is True  # always; build_engine is gone in 10


def test_deprecations_and_removals():
    assert F("10.0").calibrators_deprecated is False and F("10.1").calibrators_deprecated is True
    assert F("10.11").precision_flags_deprecated is False and F("10.12").precision_flags_deprecated is True
    assert F("11.0").precision_flags_deprecated is False  # gone, not deprecated
    assert F("10.13").precision_constraints is True and F("11.0").precision_constraints is False
    assert F("10.6").direct_io is True and F("10.7").direct_io is False  # deprecated in 10.7


@pytest.mark.parametrize(
    "version, platform, board, jetpack, expected",
    [
        ("8.2.1", "jetson", "jetson-nano", None, True),
        ("8.5.2", "jetson", "agx-xavier", None, True),
        ("10.3.0", "jetson", "agx-orin", "6.2", True),
        ("10.7.0", "jetson", "agx-orin", None, True),
        ("10.8.0", "jetson", "agx-orin", None, False),
        ("11.0.0", "jetson", "agx-orin", None, False),
        ("11.4.0", "jetson", "agx-orin", "7.2.2", False),
        ("11.4.1", "jetson", "agx-orin", "7.2.2", True),
        ("11.4.1", "jetson", "agx-orin", "7.1", False),
        ("11.4.1", "jetson", "orin-nx", "7.2.2", False),
        ("10.3.0", "desktop", "desktop-ampere", None, False),
    ],
)
def test_dla_rules(version, platform, board, jetpack, expected):
    f = F(version, platform=platform, board=board, jetpack=jetpack)
    assert f.dla is expected
    assert f.dla_reason


def test_hardware_and_version_compatibility():
    assert F("8.5.2").hardware_compat_levels == ()
    assert F("8.6.1").hardware_compat_levels == ("AMPERE_PLUS",)
    assert F("10.8").hardware_compat_levels == ("AMPERE_PLUS",)
    assert F("10.9").hardware_compat_levels == ("AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY")
    assert F("10.9", platform="jetson").hardware_compat_levels == ()  # not on JetPack
    assert F("8.5.2").version_compatible is False and F("8.6.1").version_compatible is True
    assert F("8.5.2").builder_optimization_level is False and F("8.6.1").builder_optimization_level is True


@pytest.mark.parametrize(
    "version, opset",
    [((8, 2, 1), 13), ((8, 4, 0), 13), ((8, 5, 2), 17), ((8, 6, 1), 17), ((9, 2, 0), 19), ((10, 0, 0), 20),
     ((10, 3, 0), 20), ((10, 14, 0), 20), ((10, 15, 0), 24), ((11, 4, 1), 24)],
)
def test_max_onnx_opset(version, opset):
    assert max_onnx_opset(version) == opset
    assert F(version).max_onnx_opset == opset


def test_trtexec_spellings_per_release():
    nano, xavier, orin = F("8.2.1"), F("8.5.2"), F("10.3")
    assert (nano.trtexec_mem_pool_size, nano.trtexec_build_only_flag, nano.trtexec_explicit_batch) == (False, "--buildOnly", True)
    assert (xavier.trtexec_mem_pool_size, xavier.trtexec_mem_pool_suffix, xavier.trtexec_build_only_flag) == (True, False, "--buildOnly")
    assert (orin.trtexec_mem_pool_suffix, orin.trtexec_build_only_flag, orin.trtexec_explicit_batch) == (True, "--skipInference", False)


def test_min_compute_capability():
    assert F("8.2.1").min_compute_capability == (5, 3)
    assert F("10.3").min_compute_capability == (7, 0)


def test_rtx_table_is_its_own():
    f = TrtFeatures.for_rtx("1.7.1.116")
    assert f.flavor == "rtx" and f.version == (1, 7, 1)
    assert f.strongly_typed_mandatory and not f.weak_typing and not f.calibrators and not f.dla
    assert f.version_string == "TensorRT-RTX 1.7.1"
    assert F("10.3").version_string == "TensorRT 10.3.0"


def test_to_dict_is_json_ready():
    import json

    data = F("10.3", platform="jetson", board="agx-orin", jetpack="6.2").to_dict()
    assert json.loads(json.dumps(data))["version"] == "10.3.0"
    assert data["jetpack"] == "6.2.0" and data["dla"] is True
