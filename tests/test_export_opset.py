"""Opset/exporter choice, batch profiles and --target resolution: pure rules, no export."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from edgeresnet.errors import UserError
from edgeresnet.export.onnx_meta import BatchProfile
from edgeresnet.export.opset import DYNAMO_DEFAULT_OPSET, choose_opset, exporter_for_opset, resolve_target


@pytest.fixture(autouse=True)
def _torch_with_the_dynamo_exporter(monkeypatch):
    """These are the rules for a torch whose exporter has the dynamo path (>= 2.6); the older-torch
    fallback is tested in tests/test_floors.py."""
    monkeypatch.setattr("edgeresnet.export.torch_compat.dynamo_available", lambda export=None: True)


@dataclass(frozen=True)
class FakeTarget:
    name: str
    tensorrt: str | None
    max_onnx_opset: int | None


def test_default_is_the_dynamo_exporter_at_its_own_opset():
    choice = choose_opset()
    assert (choice.exporter, choice.opset) == ("dynamo", None)


@pytest.mark.parametrize("opset, exporter", [(11, "torchscript"), (13, "torchscript"), (17, "torchscript"),
                                             (18, "dynamo"), (20, "dynamo"), (23, "dynamo")])
def test_opset_picks_the_exporter_that_can_produce_it(opset, exporter):
    assert choose_opset(opset).exporter == exporter == exporter_for_opset(opset)
    assert choose_opset(opset).opset == opset


@pytest.mark.parametrize("opset", [7, 10, 24, 30])
def test_unsupported_opset_is_a_one_line_error(opset):
    with pytest.raises(UserError, match=rf"--opset {opset}: unsupported opset; choose 11-23"):
        choose_opset(opset)


def test_exporter_that_cannot_produce_the_opset_is_an_error_not_a_silent_change():
    with pytest.raises(UserError, match="dynamo exporter produces opset 18 or newer"):
        choose_opset(17, "dynamo")
    with pytest.raises(UserError, match="use --exporter dynamo"):
        choose_opset(18, "torchscript")
    with pytest.raises(UserError, match="--exporter onnx: choose auto"):
        choose_opset(13, "onnx")
    assert choose_opset(None, "torchscript").opset == 17
    assert choose_opset(13, "auto").exporter == "torchscript"


@pytest.mark.parametrize("cap, exporter, opset", [(13, "torchscript", 13), (17, "torchscript", 17),
                                                  (18, "dynamo", 18), (20, "dynamo", 20),
                                                  (24, "dynamo", DYNAMO_DEFAULT_OPSET)])
def test_target_caps_the_opset(cap, exporter, opset):
    choice = choose_opset(target=FakeTarget("board", "8.5.2", cap))
    assert (choice.exporter, choice.opset) == (exporter, opset)
    assert "target board" in choice.reason


def test_target_without_a_cap_uses_the_default_and_explicit_opset_overrides_with_a_warning():
    assert choose_opset(target=FakeTarget("host-cpu", None, None)).exporter == "dynamo"
    choice = choose_opset(18, target=FakeTarget("nano", "8.2.1", 13))
    assert choice.opset == 18 and "above 13" in choice.warnings[0] and "nano" in choice.warnings[0]
    assert choose_opset(13, target=FakeTarget("nano", "8.2.1", 13)).warnings == ()
    with pytest.raises(UserError, match="below the oldest we export"):
        choose_opset(target=FakeTarget("ancient", "5.0", 9))
    # a target that forces torchscript with the TorchScript exporter explicitly chosen
    assert choose_opset(exporter="torchscript", target=FakeTarget("orin", "10.3.0", 20)).opset == 17


def test_resolve_target_with_a_fake_loader_and_the_real_targets():
    assert resolve_target(None) is None
    fake = FakeTarget("x", "10.3.0", 20)
    assert resolve_target("x", loader=lambda name: fake) is fake
    with pytest.raises(UserError, match="does not state max_onnx_opset"):
        resolve_target("x", loader=lambda name: object())
    nano = resolve_target("jetson-nano")
    assert nano.max_onnx_opset == 13 and choose_opset(target=nano).opset == 13
    with pytest.raises(UserError, match="--target no-such-board: unknown target"):
        resolve_target("no-such-board")


def test_batch_profile_parsing_and_validation():
    assert BatchProfile.parse("1:8:32").to_dict() == {"min": 1, "opt": 8, "max": 32, "dynamic": True}
    assert BatchProfile.parse("1:8:32").parity_batches() == [1, 32]
    assert BatchProfile.parse("4:4:4").parity_batches() == [4]
    assert BatchProfile.static(8).parity_batches() == [8] and not BatchProfile.static(8).dynamic
    with pytest.raises(UserError, match=r"--dynamic-batch 8:4:2: need 1 <= MIN <= OPT <= MAX"):
        BatchProfile.parse("8:4:2")
    for bad in ("0:1:2", "1:8", "a:b:c", "1:2:3:4"):
        with pytest.raises(UserError, match=f"--dynamic-batch {bad}"):
            BatchProfile.parse(bad)
    with pytest.raises(UserError, match="--batch 0"):
        BatchProfile.static(0)
    assert BatchProfile.from_dict(BatchProfile.parse("2:4:8").to_dict()) == BatchProfile.parse("2:4:8")


def test_parity_data_comes_from_the_option_then_the_manifests_then_digits(tmp_path):
    import json

    from edgeresnet.export import resolve_data_spec

    ckpt, onnx_file, folder = tmp_path / "m.pt", tmp_path / "m.onnx", tmp_path / "photos"
    folder.mkdir()
    ckpt.write_bytes(b"x")
    onnx_file.write_bytes(b"y")
    assert resolve_data_spec(None, ckpt) == ("digits", None)  # no manifest at all
    (tmp_path / "m.pt.json").write_text(json.dumps({"kind": "checkpoint", "settings": {"data": str(folder)}}))
    (tmp_path / "m.onnx.json").write_text(json.dumps({"kind": "onnx", "inputs": {"checkpoint": {"path": str(ckpt)}}}))
    assert resolve_data_spec(None, ckpt) == (str(folder), None)
    assert resolve_data_spec(None, onnx_file) == (str(folder), None)  # followed through the ONNX's source
    assert resolve_data_spec("digits", onnx_file) == ("digits", None)
    folder.rmdir()
    spec, note = resolve_data_spec(None, ckpt)
    assert spec == "digits" and "is not here" in note and "--data" in note
