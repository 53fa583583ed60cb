"""DeepStream nvinfer and Triton configs from the engine section and the preprocessing contract."""

from __future__ import annotations

import pytest

from edgeresnet.data.presets import Preprocess
from edgeresnet.errors import UserError
from edgeresnet.trt.deploy import deepstream_config, labels_text, triton_config
from edgeresnet.trt.engine_manifest import engine_section
from edgeresnet.trt.plan import BuildSpec, DeviceCaps, plan_build
from edgeresnet.trt.targets import load_target
from trt_onnx_helpers import digits_preprocess, imagenet_preprocess


def section(target="agx-orin", **kw):
    t = load_target(target)
    base = dict(onnx="m.onnx", input_shape=(None, 3, 224, 224), onnx_opset=17)
    base.update(kw)
    plan = plan_build(BuildSpec(**base), t.features(), DeviceCaps.from_target(t))
    return engine_section(plan, target=t, engine_file="m.engine", calib_cache=base.get("calib_cache"))


def props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_deepstream_equal_std_is_exact():
    pre = Preprocess.from_dict(digits_preprocess(size=32))
    cfg = deepstream_config(section(input_shape=(None, 3, 32, 32), precision="fp16", batch=(1, 4, 8)), pre,
                            engine_file="m.engine", onnx_file="m.onnx")
    p = props(cfg.text)
    assert cfg.warnings == () and "[property]" in cfg.text
    # y = (x/255 - 0.3059)/0.3797 = (x - 0.3059*255) * (1/(255*0.3797))
    assert float(p["net-scale-factor"]) == pytest.approx(1 / (255 * 0.3797))
    assert [float(o) for o in p["offsets"].split(";")] == pytest.approx([0.3059 * 255] * 3)
    assert p["infer-dims"] == "3;32;32" and p["batch-size"] == "8" and p["network-mode"] == "2"
    assert p["model-color-format"] == "0" and p["output-blob-names"] == "logits" and p["network-type"] == "1"
    assert p["model-engine-file"] == "m.engine" and p["onnx-file"] == "m.onnx" and p["labelfile-path"] == "labels.txt"
    assert "enable-dla" not in p


def test_deepstream_per_channel_std_is_flagged():
    pre = Preprocess.from_dict(imagenet_preprocess())
    cfg = deepstream_config(section(precision="int8", dla_core=1, calib_cache="calib.cache", calib_cache_exists=True),
                            pre)
    p = props(cfg.text)
    assert len(cfg.warnings) == 2  # std and resize/crop
    assert "single net-scale-factor cannot express per-channel std" in cfg.warnings[0]
    assert "normalization inside the graph" in cfg.warnings[0]
    assert any(line.startswith("# WARNING: DeepStream's single net-scale-factor") for line in cfg.text.splitlines())
    assert float(p["net-scale-factor"]) == pytest.approx(1 / (255 * (0.229 + 0.224 + 0.225) / 3))
    assert [float(o) for o in p["offsets"].split(";")] == pytest.approx([123.675, 116.28, 103.53])
    assert p["network-mode"] == "1" and p["int8-calib-file"] == "calib.cache"
    assert p["enable-dla"] == "1" and p["use-dla-core"] == "1" and p["batch-size"] == "1"
    assert "centre-crops" in cfg.warnings[1]


def test_deepstream_bgr_and_bad_contract():
    data = digits_preprocess(size=32)
    data["channel_order"] = "BGR"
    cfg = deepstream_config(section(input_shape=(None, 3, 32, 32)), Preprocess.from_dict(data))
    assert props(cfg.text)["model-color-format"] == "1"
    data["channel_order"] = "YUV"
    with pytest.raises(UserError, match="channel order 'YUV'"):
        deepstream_config(section(input_shape=(None, 3, 32, 32)), Preprocess.from_dict(data))


def test_triton_dynamic_batch():
    pre = Preprocess.from_dict(digits_preprocess(size=32))
    cfg = triton_config(section(input_shape=(None, 3, 32, 32), batch=(1, 4, 16)), pre, model_name="resnet18")
    text = cfg.text
    assert 'name: "resnet18"' in text and 'platform: "tensorrt_plan"' in text
    assert "max_batch_size: 16" in text
    assert 'name: "input"' in text and "data_type: TYPE_FP32" in text and "dims: [ 3, 32, 32 ]" in text
    assert 'name: "logits"' in text and "dims: [ 10 ]" in text and 'label_filename: "labels.txt"' in text
    assert "preferred_batch_size: [ 4, 16 ]" in text and "max_queue_delay_microseconds: 100" in text
    assert "kind: KIND_GPU" in text and cfg.warnings == ()
    assert text.count("{") == text.count("}") and text.count("[") == text.count("]")


def test_triton_static_batch_cannot_batch():
    pre = Preprocess.from_dict(digits_preprocess(size=32))
    cfg = triton_config(section(input_shape=(1, 3, 32, 32)), pre)
    assert "max_batch_size: 0" in cfg.text and "dims: [ 1, 3, 32, 32 ]" in cfg.text and "dims: [ 1, 10 ]" in cfg.text
    assert "dynamic_batching" not in cfg.text
    assert "cannot batch requests" in cfg.warnings[0]


def test_labels():
    assert labels_text(Preprocess.from_dict(digits_preprocess(classes=3))) == "0\n1\n2\n"
