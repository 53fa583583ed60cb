"""trtexec command lines per TensorRT release (exact), and the generated script run against a fake trtexec."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from edgeresnet.errors import UserError
from edgeresnet.trt.features import TrtFeatures
from edgeresnet.trt.plan import BuildSpec, DeviceCaps, plan_build
from edgeresnet.trt.targets import load_target
from edgeresnet.trt.trtexec import TrtexecFiles, benchmark_args, build_args, build_script, command_line, script_name

FILES = TrtexecFiles(onnx="model.onnx", engine="model.engine", layer_info="model.layers.json")


def plan_for(target: str, trt: str | None = None, **kw):
    t = load_target(target)
    base = dict(onnx="model.onnx", input_shape=(None, 3, 224, 224), onnx_opset=13)
    base.update(kw)
    return plan_build(BuildSpec(**base), t.features(trt), DeviceCaps.from_target(t))


def test_trt82_nano_fp16_workspace_and_explicit_batch():
    plan = plan_for("jetson-nano", precision="fp16", workspace_mib=256)
    assert command_line(build_args(plan, FILES)) == (
        "trtexec --onnx=model.onnx --saveEngine=model.engine --explicitBatch --fp16 "
        "--minShapes=input:1x3x224x224 --optShapes=input:1x3x224x224 --maxShapes=input:1x3x224x224 "
        "--workspace=256 --profilingVerbosity=detailed --exportLayerInfo=model.layers.json --buildOnly"
    )


def test_trt85_xavier_int8_dla_calibration_cache_gpu_fallback():
    plan = plan_for("xavier-nx", precision="int8", dla_core=1, gpu_fallback=True, calib_cache="calib.cache",
                    calib_cache_exists=True, input_shape=(2, 3, 224, 224), batch=(2, 2, 2), workspace_mib=1024,
                    timing_cache="t.cache")
    files = TrtexecFiles(onnx="model.onnx", engine="model.engine", layer_info="model.layers.json",
                         calib_cache="calib.cache", timing_cache="t.cache")
    assert command_line(build_args(plan, files)) == (
        "trtexec --onnx=model.onnx --saveEngine=model.engine --explicitBatch --int8 --calib=calib.cache "
        "--useDLACore=1 --allowGPUFallback --memPoolSize=workspace:1024 --timingCacheFile=t.cache "
        "--profilingVerbosity=detailed --exportLayerInfo=model.layers.json --buildOnly"
    )


def test_trt103_orin_dynamic_fp16_and_qdq_int8_on_dla():
    plan = plan_for("agx-orin", precision="fp16", batch=(1, 8, 32), workspace_mib=2048, onnx_opset=17)
    assert command_line(build_args(plan, FILES)) == (
        "trtexec --onnx=model.onnx --saveEngine=model.engine --fp16 "
        "--minShapes=input:1x3x224x224 --optShapes=input:8x3x224x224 --maxShapes=input:32x3x224x224 "
        "--memPoolSize=workspace:2048M --profilingVerbosity=detailed --exportLayerInfo=model.layers.json "
        "--skipInference"
    )
    plan = plan_for("agx-orin", precision="int8", dla_core=0, onnx_has_qdq=True, input_shape=(1, 3, 224, 224))
    assert command_line(build_args(plan, FILES)) == (
        "trtexec --onnx=model.onnx --saveEngine=model.engine --int8 --useDLACore=0 "
        "--profilingVerbosity=detailed --exportLayerInfo=model.layers.json --skipInference"
    )


def test_trt11_strongly_typed_with_portability_options():
    plan = plan_for("desktop-ampere", "11.4", precision="int8", onnx_has_qdq=True, batch=(1, 4, 16),
                    hardware_compatibility="SAME_COMPUTE_CAPABILITY", builder_optimization_level=4,
                    version_compatible=True)
    assert command_line(build_args(plan, FILES)) == (
        "trtexec --onnx=model.onnx --saveEngine=model.engine --stronglyTyped "
        "--minShapes=input:1x3x224x224 --optShapes=input:4x3x224x224 --maxShapes=input:16x3x224x224 "
        "--builderOptimizationLevel=4 --hardwareCompatibilityLevel=sameComputeCapability --versionCompatible "
        "--profilingVerbosity=detailed --exportLayerInfo=model.layers.json --skipInference"
    )
    plan = plan_for("desktop-ampere", "10.13", hardware_compatibility="AMPERE_PLUS")
    assert "--hardwareCompatibilityLevel=ampere+" in build_args(plan, FILES)


def test_bundle_names_come_from_the_plan_and_the_name():
    plan = plan_for("xavier-nx", precision="int8", calib_cache="/data/calib.cache", calib_cache_exists=True,
                    onnx="/models/model.onnx", timing_cache="/caches/t.cache")
    assert TrtexecFiles.for_plan(plan, "m") == TrtexecFiles(onnx="model.onnx", engine="m.engine",
                                                             layer_info="m.layers.json", timing_cache="t.cache",
                                                             calib_cache="calib.cache")


def test_trtexec_cannot_calibrate_from_images():
    plan = plan_for("agx-orin", precision="int8", calib_data="digits")
    with pytest.raises(UserError, match="trtexec cannot calibrate"):
        build_args(plan, FILES)


def test_rtx_plans_have_no_trtexec():
    t = load_target("desktop-ampere")
    plan = plan_build(BuildSpec(onnx="m.onnx", input_shape=(1, 3, 32, 32)), TrtFeatures.for_rtx("1.7"),
                      DeviceCaps.from_target(t))
    with pytest.raises(UserError, match="TensorRT-RTX has no trtexec"):
        build_args(plan, FILES)


def test_benchmark_line():
    plan = plan_for("agx-orin", precision="fp16", batch=(1, 8, 32))
    assert command_line(benchmark_args(plan, "model.engine", "t.json", "p.json")) == (
        "trtexec --loadEngine=model.engine --shapes=input:8x3x224x224 --warmUp=500 --duration=10 --iterations=100 "
        "--exportTimes=t.json --separateProfileRun --exportProfile=p.json"
    )
    plan = plan_for("agx-orin", precision="fp16", dla_core=1)
    assert benchmark_args(plan, "e", "t")[:3] == ["trtexec", "--loadEngine=e", "--useDLACore=1"]


FAKE_TRTEXEC = """#!/bin/sh
# records its arguments; writes the engine / times files it is asked for
echo "$@" >> "$FAKE_LOG"
for a in "$@"; do
  case "$a" in
    --saveEngine=*) printf 'ftrt' > "${a#--saveEngine=}" ;;
    --exportTimes=*) echo '[]' > "${a#--exportTimes=}" ;;
    --onnx=missing*) echo "[E] cannot open" ; exit 1 ;;
  esac
done
echo "[I] Latency: min = 0.5 ms"
"""


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")
def test_generated_script_runs_against_a_fake_trtexec(tmp_path):
    plan = plan_for("agx-orin", precision="fp16", batch=(1, 4, 8))
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    script = tmp_path / script_name("model")
    script.write_text(build_script(plan, "model", FILES, target=load_target("agx-orin")))
    subprocess.run(["sh", "-n", str(script)], check=True)  # POSIX syntax
    fake = tmp_path / "fake_trtexec"
    fake.write_text(FAKE_TRTEXEC)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, TRTEXEC=str(fake), FAKE_LOG=str(tmp_path / "calls.txt"))
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert calls[0] == " ".join(build_args(plan, FILES)[1:])
    assert calls[1].startswith("--loadEngine=model.engine --shapes=input:4x3x224x224")
    assert (tmp_path / "model.engine").exists() and (tmp_path / "model.times.json").exists()
    assert "Latency" in done.stdout


def test_generated_script_fails_cleanly(tmp_path):
    plan = plan_for("jetson-nano", precision="fp16")
    script = tmp_path / "build_model.sh"
    script.write_text(build_script(plan, "model", FILES, target=load_target("jetson-nano")))
    # no trtexec at all
    env = dict(os.environ, TRTEXEC=str(tmp_path / "nope"), PATH="/usr/bin:/bin")
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "trtexec not found" in done.stderr
    # trtexec present but the ONNX is not next to the script
    fake = tmp_path / "fake_trtexec"
    fake.write_text(FAKE_TRTEXEC)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, TRTEXEC=str(fake), FAKE_LOG=str(tmp_path / "calls.txt"))
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "model.onnx not found next to this script" in done.stderr
    # a failing build stops the script with the log's tail
    (tmp_path / "missing.onnx").write_bytes(b"x")
    files = TrtexecFiles(onnx="missing.onnx", engine="model.engine", layer_info="model.layers.json")
    script.write_text(build_script(plan, "model", files))
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "trtexec build failed" in done.stderr and "cannot open" in done.stderr
    assert not (tmp_path / "model.engine").exists()
