"""setup.py's build_py hook: a wheel ships the top-level targets/*.yaml as edgeresnet/targets/ (no full build)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("setuptools")
from setuptools.dist import Distribution  # noqa: E402
from setuptools.errors import FileError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGETS = REPO / "targets"


def _setup_module():
    # Imported under its own name, so setup() (guarded by __name__ == "__main__") does not run.
    spec = importlib.util.spec_from_file_location("edgeresnet_setup_py", REPO / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _command(build_lib: Path, *, editable: bool = False):
    setup_py = _setup_module()
    # No packages: setuptools' own build_py has nothing to do, only the targets hook runs.
    cmd = setup_py.build_py(Distribution({"name": "edgeresnet-hook-test", "packages": []}))
    cmd.build_lib = str(build_lib)
    cmd.editable_mode = editable
    cmd.ensure_finalized()
    return cmd


def _sources() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(TARGETS.glob("*.yaml"))}


def test_build_py_copies_the_top_level_targets(tmp_path):
    sources = _sources()
    assert len(sources) == 12
    dest = tmp_path / "edgeresnet" / "targets"
    dest.mkdir(parents=True)
    (dest / "removed-board.yaml").write_text("name: removed-board\n")  # left over in a reused build/
    cmd = _command(tmp_path)
    cmd.run()
    assert {p.name: p.read_bytes() for p in sorted(dest.glob("*.yaml"))} == sources
    expected = {str(dest / name) for name in sources}
    assert expected <= set(cmd.get_outputs())
    assert {k: v for k, v in cmd.get_output_mapping().items() if k in expected} == {
        str(dest / name): str(TARGETS / name) for name in sources
    }


def test_editable_mode_copies_nothing_but_reports_the_mapping(tmp_path):
    cmd = _command(tmp_path, editable=True)
    cmd.run()
    assert not (tmp_path / "edgeresnet").exists()
    mapping = cmd.get_output_mapping()
    for name in _sources():
        assert mapping[str(tmp_path / "edgeresnet" / "targets" / name)] == str(TARGETS / name)


def test_no_target_files_is_a_build_error(tmp_path):
    with pytest.raises(FileError, match="no \\*.yaml files"):
        _setup_module().targets_output_mapping(str(tmp_path / "build"), src=tmp_path)


def test_one_copy_in_git_and_the_sdist_carries_it():
    assert not (REPO / "edgeresnet" / "targets").exists(), "targets/*.yaml are copied at build time; keep one copy"
    assert "include targets/*.yaml" in (REPO / "MANIFEST.in").read_text().splitlines()
