"""The dependency floors we declare: one table (docs/floors.md) equal to pyproject.toml, the Jetson wheels it
must accept, and the version guards that let the oldest torch we accept run the exporter."""

from __future__ import annotations

import re
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from edgeresnet.errors import UserError
from edgeresnet.export import torch_compat
from edgeresnet.export.opset import choose_opset

ROOT = Path(__file__).resolve().parents[1]
FLOORS_MD = ROOT / "docs" / "floors.md"

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6): pytest itself depends on tomli there
    import tomli as tomllib


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _requirements() -> dict[str, str]:
    """``[project] dependencies`` as {name: specifier}."""
    from packaging.requirements import Requirement

    reqs = {}
    for line in _pyproject()["project"]["dependencies"]:
        req = Requirement(line)
        reqs[req.name.lower()] = str(req.specifier)
    return reqs


def _floor(specifier: str) -> str:
    """The lower bound of a specifier set: ``>=2.3,<=2.14.1`` -> ``>=2.3``."""
    lows = [s for s in specifier.split(",") if s.startswith(">=")]
    assert len(lows) == 1, f"{specifier}: expected exactly one >= bound"
    return lows[0]


def _table() -> dict[str, dict[str, str]]:
    """docs/floors.md's floor table: first column the package, second the floor."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] | None = None
    for line in FLOORS_MD.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            header = None  # a table ends at its first non-table line
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if all(set(c) <= set("-: ") for c in cells):
            continue
        if header[:2] == ["package", "floor"]:
            rows[cells[0].strip("`").lower()] = dict(zip(header, (c.strip("`") for c in cells)))
    return rows


# -- the table and pyproject.toml ----------------------------------------------------------------


def test_every_declared_floor_is_in_the_table_and_equal():
    table, reqs = _table(), _requirements()
    assert set(reqs) <= set(table), f"floors missing from docs/floors.md: {sorted(set(reqs) - set(table))}"
    for name, spec in reqs.items():
        assert table[name]["floor"] == _floor(spec), f"{name}: pyproject {spec} vs docs/floors.md {table[name]['floor']}"
    assert table["python"]["floor"] == _pyproject()["project"]["requires-python"]
    for name, row in table.items():
        assert row["why"] and row["source"], f"docs/floors.md {name}: say why and where the fact comes from"


# NVIDIA's own wheels for JetPack 6 (file names from NVIDIA's "PyTorch for Jetson" listings, see docs/floors.md).
JETPACK_WHEELS = {
    "JetPack 6.0 torch": ("torch", "2.3.0"),
    "JetPack 6.0 torchvision": ("torchvision", "0.18.0a0+6043bc2"),
    "JetPack 6.1/6.2 torch": ("torch", "2.5.0a0+872d972"),
}


@pytest.mark.parametrize("label", sorted(JETPACK_WHEELS))
def test_pip_keeps_the_jetpack_wheels_installed(label):
    """pip keeps an installed distribution only if ``specifier.contains(version, prereleases=True)``
    (pip/_internal/resolution/resolvelib/factory.py); otherwise it replaces NVIDIA's CUDA build with PyPI's."""
    from packaging.specifiers import SpecifierSet

    name, version = JETPACK_WHEELS[label]
    spec = _requirements()[name]
    assert SpecifierSet(spec).contains(version, prereleases=True), f"{label} {version} is refused by {name}{spec}"


def test_requires_python_admits_jetpack6_python():
    from packaging.specifiers import SpecifierSet

    assert SpecifierSet(_pyproject()["project"]["requires-python"]).contains("3.10.12")  # Ubuntu 22.04 (JetPack 6)


# -- the version guards: each branch, with the real signatures of the releases ---------------------


def export_2_3(model: Any, args: Any, f: Any, export_params: bool = True, verbose: bool = False, training: Any = None,
               input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
               operator_export_type: Any = None, opset_version: int | None = None, do_constant_folding: bool = True,
               dynamic_axes: Mapping[str, Any] | None = None, keep_initializers_as_inputs: bool | None = None,
               custom_opsets: Mapping[str, int] | None = None, export_modules_as_functions: Any = False,
               autograd_inlining: bool | None = True) -> None:
    """torch 2.3.1 torch/onnx/utils.py ``export``'s parameters (no ``dynamo``)."""


def export_2_4(model: Any, args: Any, f: Any = None, export_params: bool = True, verbose: bool = False,
               training: Any = None, input_names: Sequence[str] | None = None,
               output_names: Sequence[str] | None = None, operator_export_type: Any = None,
               opset_version: int | None = None, do_constant_folding: bool = True,
               dynamic_axes: Mapping[str, Any] | None = None, keep_initializers_as_inputs: bool | None = None,
               custom_opsets: Mapping[str, int] | None = None, export_modules_as_functions: Any = False,
               autograd_inlining: bool | None = True, dynamo: bool = False) -> None:
    """torch 2.4.0 torch/onnx/utils.py ``export``: ``dynamo`` exists, dynamo=True takes no dynamic_shapes."""


def export_2_5(model: Any, args: tuple[Any, ...] = (), f: Any = None, *, kwargs: dict[str, Any] | None = None,
               export_params: bool = True, verbose: bool | None = None, input_names: Sequence[str] | None = None,
               output_names: Sequence[str] | None = None, opset_version: int | None = None,
               dynamic_axes: Mapping[str, Any] | None = None, keep_initializers_as_inputs: bool = False,
               dynamo: bool = False, external_data: bool = True, dynamic_shapes: Any = None, report: bool = False,
               verify: bool = False, profile: bool = False, dump_exported_program: bool = False,
               artifacts_dir: str = ".", fallback: bool = False, training: Any = None,
               operator_export_type: Any = None, do_constant_folding: bool = True, custom_opsets: Any = None,
               export_modules_as_functions: bool | Collection[type] = False, autograd_inlining: bool = True,
               **_: Any) -> None:
    """torch 2.5.0 torch/onnx/__init__.py ``export``: no ``optimize``; ``**_`` swallows it silently."""


def test_torchscript_kwargs_follow_the_signature():
    assert torch_compat.torchscript_kwargs(export_2_3) == {}
    assert torch_compat.torchscript_kwargs(export_2_4) == {"dynamo": False}
    assert torch_compat.torchscript_kwargs(export_2_5) == {"dynamo": False}


def test_dynamo_needs_every_keyword_by_name_a_catch_all_does_not_count():
    assert torch_compat.dynamo_missing(export_2_3) == ("dynamo", "dynamic_shapes", "optimize", "report")
    assert torch_compat.dynamo_missing(export_2_4) == ("dynamic_shapes", "optimize", "report")
    assert torch_compat.dynamo_missing(export_2_5) == ("optimize",)  # 2.5 would ignore optimize=True
    assert not torch_compat.dynamo_available(export_2_5)


def test_the_installed_torch_takes_the_branch_its_version_says():
    import torch
    from packaging.version import Version

    release = Version(str(torch.__version__).split("+")[0]).release[:2]
    assert torch_compat.torchscript_kwargs() == ({} if release < (2, 4) else {"dynamo": False})
    assert torch_compat.dynamo_available() == (release >= (2, 6))


def test_the_torchscript_export_call_runs_against_torch_2_3s_signature(monkeypatch):
    """Our call site, unchanged, against an exporter shaped like torch 2.3's: ``dynamo=`` must not be passed."""
    import onnx
    import torch

    from edgeresnet.export.onnx_export import _export_torchscript
    from edgeresnet.export.onnx_meta import BatchProfile

    real = torch.onnx.export
    calls: list[dict[str, Any]] = []

    def as_in_2_3(model, args, f, export_params=True, verbose=False, training=torch.onnx.TrainingMode.EVAL,
                  input_names=None, output_names=None, operator_export_type=None, opset_version=None,
                  do_constant_folding=True, dynamic_axes=None, keep_initializers_as_inputs=None,
                  custom_opsets=None, export_modules_as_functions=False, autograd_inlining=True):
        calls.append({"opset_version": opset_version, "input_names": input_names})
        real(model, args, f, **torch_compat.torchscript_kwargs(real), opset_version=opset_version,
             input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes)

    monkeypatch.setattr(torch.onnx, "export", as_in_2_3)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).eval()
    proto = _export_torchscript(model, torch.zeros(2, 3, 8, 8), BatchProfile.parse("1:2:4"), 13)
    assert calls == [{"opset_version": 13, "input_names": ["input"]}]
    assert onnx.load_from_string(proto.SerializeToString()).opset_import[0].version == 13


def test_without_the_dynamo_path_the_default_is_torchscript_17():
    choice = choose_opset(dynamo_available=False)
    assert (choice.exporter, choice.opset) == ("torchscript", 17) and "torch < 2.6" in choice.reason
    assert choose_opset(dynamo_available=True).exporter == "dynamo"


class _Target:
    def __init__(self, cap: int | None) -> None:
        self.name, self.tensorrt, self.max_onnx_opset = "orin", "10.3.0", cap


@pytest.mark.parametrize("cap, opset", [(13, 13), (17, 17), (20, 17), (None, 17)])
def test_without_the_dynamo_path_a_target_gets_the_newest_torchscript_opset_it_parses(cap, opset):
    choice = choose_opset(target=_Target(cap), dynamo_available=False)
    assert (choice.exporter, choice.opset) == ("torchscript", opset)


@pytest.mark.parametrize("opset, exporter, option", [(18, None, "--opset 18"), (20, "auto", "--opset 20"),
                                                     (None, "dynamo", "--exporter dynamo"),
                                                     (20, "dynamo", "--exporter dynamo")])
def test_asking_for_dynamo_without_it_is_a_one_line_error_naming_the_fix(opset, exporter, option):
    with pytest.raises(UserError) as info:
        choose_opset(opset, exporter, dynamo_available=False)
    text = str(info.value)
    assert text.startswith(f"{option}: the dynamo exporter needs torch >= 2.6") and "--opset 17" in text
    assert "\n" not in text


def test_torchscript_opsets_are_unaffected_without_the_dynamo_path():
    for opset in (11, 13, 17):
        assert choose_opset(opset, dynamo_available=False).exporter == "torchscript"
    with pytest.raises(UserError, match="unsupported opset"):
        choose_opset(30, dynamo_available=False)


def test_the_unguarded_dynamo_false_calls_are_gone():
    """No call in the package passes ``dynamo=False`` itself (a TypeError on torch 2.3): torch_compat decides."""
    import ast

    offenders = []
    for path in sorted((ROOT / "edgeresnet").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and any(k.arg == "dynamo" and isinstance(k.value, ast.Constant)
                                                  and k.value.value is False for k in node.keywords):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_python_3_10_stdlib_only():
    """JetPack 6 runs Python 3.10: no module or name that only 3.11 added."""
    added_in_3_11 = {"tomllib", "wsgiref.types"}
    names_3_11 = re.compile(r"\b(typing\.(Self|LiteralString|Never|assert_never|reveal_type|Required|NotRequired)"
                            r"|datetime\.UTC|enum\.StrEnum|asyncio\.TaskGroup|asyncio\.timeout\b|hashlib\.file_digest"
                            r"|contextlib\.chdir|ExceptionGroup|except\s*\*)")
    import ast

    bad = []
    for path in sorted((ROOT / "edgeresnet").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, feature_version=(3, 10))
        for node in ast.walk(tree):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if isinstance(node, ast.ImportFrom) and node.module in ("typing", "datetime", "enum", "asyncio"):
                mods += [f"{node.module}.{a.name}" for a in node.names]
            bad += [f"{path.relative_to(ROOT)}:{node.lineno} {m}" for m in mods
                    if m in added_in_3_11 or names_3_11.fullmatch(m)]
        bad += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in names_3_11.finditer(text)]
    assert bad == []



def test_torch_2_3s_weights_only_refusal_is_reported_as_refused(tmp_path, monkeypatch):
    """torch 2.3.0 refuses a code-running pickle with this text (torch/serialization.py UNSAFE_MESSAGE +
    torch/_weights_only_unpickler.py "Unsupported class ..."): it must read as refused, not as a damaged file."""
    import pickle

    import torch

    from edgeresnet.artifacts import safe_torch_load

    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1)}, path)  # a real torch file, so the loader reaches torch.load

    def load_2_3(*_args, **_kwargs):
        raise pickle.UnpicklingError(
            "Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` will likely "
            "succeed, but it can result in arbitrary code execution.Do it only if you get the file from a trusted "
            "source. WeightsUnpickler error: Unsupported class posix.system")

    monkeypatch.setattr(torch, "load", load_2_3)
    with pytest.raises(UserError, match=r"evil\.pt: refused, the file contains Python objects"):
        safe_torch_load(path)
