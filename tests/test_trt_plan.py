"""plan_build: every validation rule, the exact steps per release family, and invariants over all targets."""

from __future__ import annotations

import itertools

import pytest

from edgeresnet.errors import UserError
from edgeresnet.trt.features import TrtFeatures
from edgeresnet.trt.onnx_info import inspect_onnx, onnx_has_qdq
from edgeresnet.trt.plan import BuildSpec, DeviceCaps, parse_batch, plan_build
from edgeresnet.trt.plan_steps import STEP_OPS, Step
from edgeresnet.trt.targets import list_targets, load_target
from edgeresnet.trt.timing_cache import timing_cache_key
from trt_onnx_helpers import make_classifier_onnx


def spec(**kw) -> BuildSpec:
    base = dict(onnx="m.onnx", input_shape=(None, 3, 32, 32), onnx_opset=17)
    base.update(kw)
    return BuildSpec(**base)


def target_plan(name: str, trt: str | None = None, **kw):
    t = load_target(name)
    return plan_build(spec(**kw), t.features(trt), DeviceCaps.from_target(t))


def ops(plan) -> list[str]:
    return [s.op for s in plan.steps]


def err(fn, *args, **kw) -> str:
    with pytest.raises(UserError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# -- request sanity --------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [("1", (1, 1, 1)), ("8", (8, 8, 8)), ("1:8:32", (1, 8, 32)), (4, (4, 4, 4))])
def test_parse_batch(text, expected):
    assert parse_batch(text) == expected


@pytest.mark.parametrize("text, match", [("0", "at least 1"), ("8:4:2", "MIN <= OPT <= MAX"), ("a", "MIN:OPT:MAX"),
                                         ("1:2", "MIN:OPT:MAX"), ("-1", "MIN:OPT:MAX")])
def test_parse_batch_rejects(text, match):
    assert match in err(parse_batch, text)


def test_request_errors():
    assert "choose one of fp32, fp16, int8, best" in err(target_plan, "agx-orin", precision="fp8")
    assert "need 1 <= MIN <= OPT <= MAX" in err(target_plan, "agx-orin", batch=(4, 2, 8))
    assert "positive size in MiB" in err(target_plan, "agx-orin", workspace_mib=0)
    assert "--typing 'loose'" in err(target_plan, "agx-orin", typing="loose")
    cpu = DeviceCaps(name="host", compute_capability=None, fp16=False, int8=False)
    assert "has no NVIDIA GPU" in err(plan_build, spec(), TrtFeatures.for_version("10.3"), cpu)


def test_step_is_a_closed_set():
    with pytest.raises(ValueError, match="unknown build step"):
        Step("set_precision", {})
    with pytest.raises(ValueError, match="unknown builder flag"):
        Step("set_flag", {"flag": "STRICT_TYPES"})
    assert STEP_OPS[0] == "create_network" and STEP_OPS[-1] == "build"


# -- exact steps per family --------------------------------------------------------------------------


def test_fp16_on_nano_trt82_weakly_typed_explicit_batch_and_max_workspace():
    plan = target_plan("jetson-nano", precision="fp16", onnx_opset=13, workspace_mib=256)
    assert [s.to_dict() for s in plan.steps] == [
        {"op": "create_network", "args": {"strongly_typed": False, "explicit_batch_flag": True}},
        {"op": "parse_onnx", "args": {"path": "m.onnx"}},
        {"op": "max_workspace", "args": {"bytes": 256 << 20}},
        {"op": "set_flag", "args": {"flag": "FP16"}},
        {"op": "profile", "args": {"input": "input", "min": [1, 3, 32, 32], "opt": [1, 3, 32, 32], "max": [1, 3, 32, 32]}},
        {"op": "profiling_verbosity", "args": {"level": "DETAILED"}},
        {"op": "build", "args": {}},
    ]
    assert plan.precision_label == "fp16" and plan.int8_mode is None and not plan.strongly_typed


def test_xavier_trt85_uses_memory_pools_and_static_onnx_has_no_profile():
    plan = target_plan("xavier-nx", precision="fp32", input_shape=(1, 3, 32, 32), workspace_mib=1024)
    assert ops(plan) == ["create_network", "parse_onnx", "memory_pool", "profiling_verbosity", "build"]
    assert plan.find("memory_pool").args == {"pool": "WORKSPACE", "bytes": 1 << 30}
    assert plan.find("create_network").args["explicit_batch_flag"] is True


def test_orin_trt103_dynamic_fp16():
    plan = target_plan("agx-orin", precision="fp16", batch=(1, 8, 32))
    assert plan.find("create_network").args == {"strongly_typed": False, "explicit_batch_flag": False}
    assert plan.flags == ("FP16",)
    assert plan.profile == {"input": "input", "min": [1, 3, 32, 32], "opt": [8, 3, 32, 32], "max": [32, 3, 32, 32]}


def test_implicit_int8_uses_entropy_calibrator_with_cache():
    plan = target_plan("agx-orin", precision="int8", batch=(1, 4, 8), calib_cache="c.cache", calib_cache_exists=True)
    assert plan.int8_mode == "implicit" and plan.flags == ("INT8",)
    calib = plan.find("calibrator").args
    assert calib == {"kind": "entropy2", "cache": "c.cache", "cache_exists": True, "data": None, "input": "input",
                     "batch_size": 4, "shape": [4, 3, 32, 32], "max_images": 512, "calibration_profile": True}
    assert ops(plan).index("profile") < ops(plan).index("calibrator")  # set_calibration_profile needs it
    assert any("deprecates INT8 calibrators" in w for w in plan.warnings)


def test_best_is_fp16_plus_int8_where_allowed():
    plan = target_plan("agx-orin", precision="best", calib_data="digits")
    assert plan.flags == ("FP16", "INT8") and plan.precisions == ("fp32", "fp16", "int8")
    assert plan.find("calibrator").args["data"] == "digits"
    # without calibration: FP16 only, said so
    plan = target_plan("agx-orin", precision="best")
    assert plan.flags == ("FP16",) and plan.int8_mode is None
    assert any("without INT8" in w for w in plan.warnings)
    # on Nano (no INT8): FP16 only
    plan = target_plan("jetson-nano", precision="best", onnx_opset=13, calib_cache="c", calib_cache_exists=True)
    assert plan.flags == ("FP16",) and any("no INT8" in w for w in plan.warnings)


def test_int8_on_nano_is_refused():
    msg = err(target_plan, "jetson-nano", precision="int8", onnx_opset=13, calib_cache="c", calib_cache_exists=True)
    assert msg == "--precision int8: NVIDIA Tegra X1 (Maxwell) (SM 5.3) has no INT8 support; use --precision fp16"
    assert "no INT8 support" in err(target_plan, "jetson-tx2", precision="int8", onnx_opset=13, calib_data="digits")


def test_no_int8_without_calibration_or_qdq():
    msg = err(target_plan, "agx-orin", precision="int8")
    assert "needs calibration" in msg and "--calib-cache" in msg


def test_qdq_onnx_on_trt103_is_weakly_typed_with_int8_flag():
    plan = target_plan("agx-orin", precision="int8", onnx_has_qdq=True)
    assert plan.int8_mode == "explicit" and not plan.strongly_typed
    assert plan.flags == ("INT8",) and plan.find("calibrator") is None
    plan = target_plan("agx-orin", precision="best", onnx_has_qdq=True)
    assert plan.flags == ("FP16", "INT8")


def test_qdq_onnx_on_trt1012_and_11_is_strongly_typed_without_flags():
    for version in ("10.12", "10.13", "11.4"):
        plan = target_plan("desktop-ampere", version, precision="int8", onnx_has_qdq=True)
        assert plan.strongly_typed and plan.flags == () and plan.int8_mode == "explicit", version


def test_qdq_onnx_refuses_float_precisions():
    assert "carries Q/DQ (INT8) nodes" in err(target_plan, "agx-orin", precision="fp16", onnx_has_qdq=True)


def test_trt11_is_strongly_typed_and_has_no_calibrators():
    plan = target_plan("desktop-ada", "11.4", precision="fp32")
    assert plan.strongly_typed and plan.find("create_network").args["explicit_batch_flag"] is False
    assert "removed implicit INT8 calibration" in err(target_plan, "desktop-ada", "11.4", precision="int8",
                                                       calib_cache="c", calib_cache_exists=True)
    msg = err(target_plan, "desktop-ada", "11.0", precision="fp16")
    assert "strongly typed" in msg and "is FP32" in msg
    plan = target_plan("desktop-ada", "11.0", precision="fp16", onnx_has_fp16=True)
    assert plan.flags == () and plan.precisions == ("fp32", "fp16")


def test_calibrator_only_when_weakly_typed():
    msg = err(target_plan, "desktop-ampere", "10.13", precision="int8", calib_cache="c", calib_cache_exists=True,
              typing="strong")
    assert "implicit INT8 calibration works only with weakly typed" in msg
    plan = target_plan("desktop-ampere", "10.13", precision="int8", calib_cache="c", calib_cache_exists=True)
    assert not plan.strongly_typed and plan.find("calibrator") is not None
    assert any("deprecates the FP16/INT8 builder flags" in w for w in plan.warnings)


def test_typing_overrides():
    assert "has no strongly typed networks" in err(target_plan, "agx-xavier", typing="strong")
    assert "builds strongly typed networks only" in err(target_plan, "desktop-h100", "11.4", typing="weak")
    plan = target_plan("agx-orin", precision="int8", onnx_has_qdq=True, typing="strong")
    assert plan.strongly_typed and plan.flags == ()


# -- DLA -------------------------------------------------------------------------------------------------


def test_dla_recipe_mirrors_trtexec():
    plan = target_plan("agx-orin", precision="int8", dla_core=1, calib_cache="c", calib_cache_exists=True)
    assert ops(plan)[:7] == ["create_network", "parse_onnx", "set_flag", "dla", "set_flag", "set_flag", "profile"]
    assert plan.flags == ("INT8", "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO")
    assert plan.find("dla").args == {"core": 1, "gpu_fallback": False}
    plan = target_plan("agx-orin", precision="fp16", dla_core=0, gpu_fallback=True)
    assert plan.flags == ("FP16", "PREFER_PRECISION_CONSTRAINTS", "GPU_FALLBACK")
    assert plan.gpu_fallback and any("fall back to the GPU silently" in w for w in plan.warnings)


def test_dla_forces_fp16_when_not_int8():
    plan = target_plan("xavier-nx", precision="fp32", dla_core=0)
    assert plan.flags == ("PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO", "FP16")
    assert plan.precision_label == "fp16" and any("built as FP16 on DLA" in w for w in plan.warnings)


def test_dla_needs_static_shapes():
    msg = err(target_plan, "agx-orin", precision="fp16", dla_core=0, batch=(1, 4, 8))
    assert msg == "--dla 0 with --batch 1:4:8: DLA needs a static shape (min = opt = max); build with --batch 4"


def test_dla_core_must_exist():
    msg = err(target_plan, "agx-orin", precision="fp16", dla_core=2)
    assert msg == "--dla 2: NVIDIA Jetson AGX Orin (Ampere) has 2 DLA cores (0, 1); pick one of them"
    assert "has no DLA cores" in err(target_plan, "orin-nano", precision="fp16", dla_core=0)
    assert "has no DLA cores" in err(target_plan, "desktop-ampere", "10.13", precision="fp16", dla_core=0)
    assert "has no DLA cores" in err(target_plan, "jetson-nano", precision="fp16", dla_core=0, onnx_opset=13)


def test_dla_availability_per_release():
    orin = load_target("agx-orin")
    device = DeviceCaps.from_target(orin)
    f108 = TrtFeatures.for_version("10.8", platform="jetson", board="agx-orin")
    assert "10.7 was the last 10.x release with DLA" in err(plan_build, spec(precision="fp16", dla_core=0), f108, device)
    f110 = TrtFeatures.for_version("11.0", platform="jetson", board="agx-orin")
    assert "11.0-11.4.0 has no DLA" in err(plan_build, spec(precision="fp16", onnx_has_fp16=True, dla_core=0), f110, device)
    # 11.4.1 on AGX Orin (JetPack 7.2.2): strongly typed; precision must be in the ONNX
    assert "takes precision from the ONNX" in err(target_plan, "agx-orin", "11.4.1", precision="fp32", dla_core=0)
    plan = target_plan("agx-orin", "11.4.1", precision="int8", onnx_has_qdq=True, dla_core=0)
    assert plan.strongly_typed and plan.flags == () and plan.dla_core == 0
    assert any("DIRECT_IO" in w for w in plan.warnings)
    # 10.7: DIRECT_IO deprecated, so not set (Holoscan does the same)
    f107 = TrtFeatures.for_version("10.7", platform="jetson", board="agx-orin")
    plan = plan_build(spec(precision="fp16", dla_core=0), f107, device)
    assert plan.flags == ("FP16", "PREFER_PRECISION_CONSTRAINTS")


def test_dla_and_gpu_fallback_misuse():
    assert "--gpu-fallback only applies to DLA" in err(target_plan, "agx-orin", gpu_fallback=True)
    assert "entropy2 calibrator" in err(target_plan, "agx-orin", precision="int8", dla_core=0, calib_cache="c",
                                        calib_cache_exists=True, calibrator="minmax")
    assert "DLA takes batches up to 4096" in err(target_plan, "agx-orin", precision="fp16", dla_core=0,
                                                 batch=(5000, 5000, 5000))


# -- the ONNX against the release --------------------------------------------------------------------


def test_onnx_shape_and_opset_checks():
    msg = err(target_plan, "agx-orin", input_shape=(1, 3, 32, 32), batch=(1, 8, 16))
    assert "fixed batch of 1" in msg and "re-export with --batch 1:8:16" in msg
    assert "dynamic channel/height/width" in err(target_plan, "agx-orin", input_shape=(None, 3, None, None))
    assert "rank 2" in err(target_plan, "agx-orin", input_shape=(None, 10))
    msg = err(target_plan, "jetson-nano", precision="fp16", onnx_opset=17)
    assert msg == ("m.onnx: opset 17 is newer than TensorRT 8.2.1's ONNX parser takes (<= 13); "
                   "re-export with edgeresnet export --opset 13")
    target_plan("agx-orin", onnx_opset=20)  # 10.3 takes 20


def test_compute_capability_floor_of_the_release():
    nano = DeviceCaps.from_target(load_target("jetson-nano"))
    msg = err(plan_build, spec(onnx_opset=13), TrtFeatures.for_version("10.3"), nano)
    assert "needs compute capability >= 7.0" in msg and "SM 5.3" in msg


# -- portability and knobs ---------------------------------------------------------------------------


def test_portability_options():
    plan = target_plan("desktop-ampere", "10.13", hardware_compatibility="SAME_COMPUTE_CAPABILITY",
                       builder_optimization_level=5, version_compatible=True)
    assert plan.find("hardware_compatibility").args == {"level": "SAME_COMPUTE_CAPABILITY"}
    assert plan.find("builder_optimization_level").args == {"level": 5}
    assert plan.flags == ("VERSION_COMPATIBLE",)
    assert ops(plan)[-1] == "build"
    assert "not supported on JetPack" in err(target_plan, "agx-orin", hardware_compatibility="AMPERE_PLUS")
    assert "needs TensorRT >= 10.9" in err(target_plan, "desktop-ampere", "10.8", hardware_compatibility="SAME_COMPUTE_CAPABILITY")
    assert "needs a GPU of SM 8.0+" in err(target_plan, "desktop-t4", "10.13", hardware_compatibility="AMPERE_PLUS")
    assert "choose 0-5" in err(target_plan, "agx-orin", builder_optimization_level=7)
    assert "added in 8.6" in err(target_plan, "agx-xavier", builder_optimization_level=2)
    assert "lacks version-compatible" in err(target_plan, "agx-xavier", version_compatible=True)


def test_timing_cache_keyed_by_gpu_and_version():
    assert timing_cache_key("NVIDIA GeForce RTX 3090", (8, 6), "10.13.0") == "nvidia-geforce-rtx-3090-sm86-trt10.13.0"
    assert timing_cache_key("Orin", "8.7", (10, 3, 0)) == "orin-sm87-trt10.3.0"
    assert timing_cache_key("Orin", "8.7", "10.3.0") != timing_cache_key("Orin", "8.7", "10.3.1")
    plan = target_plan("agx-orin", timing_cache="/tmp/x.cache")
    assert plan.find("timing_cache").args == {"path": "/tmp/x.cache", "key": "nvidia-jetson-agx-orin-ampere-sm87-trt10.3.0",
                                              "ignore_mismatch": False}
    assert ops(plan).index("timing_cache") < ops(plan).index("build")
    plan = target_plan("agx-orin", timing_cache="x", builder_optimization_level=0)
    assert any("level 0 does not use the timing cache" in w for w in plan.warnings)


def test_rtx_plans_are_strongly_typed_and_skip_the_timing_cache():
    t = load_target("desktop-ampere")
    plan = plan_build(spec(timing_cache="x.cache"), TrtFeatures.for_rtx("1.7.1"), DeviceCaps.from_target(t))
    assert plan.strongly_typed and plan.find("timing_cache") is None
    assert any("ignores timing caches" in w for w in plan.warnings)
    assert plan.to_dict()["tensorrt"] == "TensorRT-RTX 1.7.1"


# -- real ONNX files -----------------------------------------------------------------------------------


def test_inspect_real_onnx(tmp_path):
    plain = make_classifier_onnx(tmp_path / "m.onnx", opset=13)
    info = inspect_onnx(plain)
    assert (info.input_name, info.input_shape, info.opset, info.has_qdq) == ("input", (None, 3, 32, 32), 13, False)
    assert info.output_names == ("logits",) and info.input_shape[0] is None
    qdq = make_classifier_onnx(tmp_path / "q.onnx", qdq=True, batch=1)
    assert onnx_has_qdq(qdq) and not onnx_has_qdq(plain)
    assert inspect_onnx(qdq).input_shape == (1, 3, 32, 32)
    assert inspect_onnx(make_classifier_onnx(tmp_path / "h.onnx", fp16_cast=True)).has_fp16
    plan = plan_build(BuildSpec.from_onnx_info(inspect_onnx(qdq), precision="int8"),
                      load_target("agx-orin").features(), DeviceCaps.from_target(load_target("agx-orin")))
    assert plan.int8_mode == "explicit" and plan.find("profile") is None


def test_files_that_are_not_models(tmp_path):
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 10)
    assert "not an ONNX model" in err(inspect_onnx, text)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert "file is empty" in err(inspect_onnx, empty)
    assert "ONNX file not found" in err(inspect_onnx, tmp_path / "missing.onnx")
    assert "is a directory" in err(inspect_onnx, tmp_path)
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(make_classifier_onnx(tmp_path / "full.onnx").read_bytes()[:300])
    assert "ONNX model" in err(inspect_onnx, truncated)


# -- invariants over every target, precision, DLA choice and batch -------------------------------------


def _gpu_targets():
    return [t for t in list_targets() if t.kind != "cpu"]


@pytest.mark.parametrize("target", _gpu_targets(), ids=lambda t: t.name)
def test_every_combination_is_a_plan_or_one_line_error(target):
    device = DeviceCaps.from_target(target)
    versions = [s.tensorrt for s in target.stacks] if target.is_jetson else sorted({"8.6", "10.3", "10.13", target.default_trt_version})
    combos = itertools.product(versions, ("fp32", "fp16", "int8", "best"), (None, 0, 1),
                               ((1, 1, 1), (1, 4, 8)), (False, True), (None, "c.cache"))
    planned = 0
    for version, precision, dla, batch, qdq, cache in combos:
        features = target.features(version)
        s = spec(precision=precision, dla_core=dla, batch=batch, onnx_has_qdq=qdq, calib_cache=cache,
                 calib_cache_exists=cache is not None, onnx_opset=13)
        try:
            plan = plan_build(s, features, device)
        except UserError as exc:
            assert "\n" not in str(exc)
            continue
        planned += 1
        names = ops(plan)
        assert names[:2] == ["create_network", "parse_onnx"] and names[-1] == "build"
        assert "profiling_verbosity" in names and all(op in STEP_OPS for op in names)
        if plan.strongly_typed:
            assert not {"FP16", "INT8", "PREFER_PRECISION_CONSTRAINTS"} & set(plan.flags)
            assert plan.find("calibrator") is None
        if plan.find("calibrator") is not None:
            assert features.calibrators and "INT8" in plan.flags and plan.int8_mode == "implicit"
        if plan.int8_mode:
            assert device.int8 and (qdq or cache)
        if dla is not None:
            assert features.dla and dla < device.dla_cores and batch == (1, 1, 1)
            assert plan.precision_label in ("fp16", "int8")
        assert (plan.find("max_workspace") is None) or not features.memory_pools
    assert planned > 0
