"""Build hook only: everything else about the package is in pyproject.toml.

The deployment targets live in the repository's top-level ``targets/*.yaml`` (the one copy kept in git).
``edgeresnet.trt.targets.targets_dir()`` reads them from there in a checkout or an editable install, and from
``edgeresnet/targets/`` (package data) in an installed wheel. This ``build_py`` copies the top-level files into
the build's ``edgeresnet/targets/`` so that a wheel ships them; MANIFEST.in puts ``targets/`` in the sdist so
a wheel built from the sdist gets them too.
"""

from __future__ import annotations

import logging
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py as _build_py
from setuptools.errors import FileError

ROOT = Path(__file__).resolve().parent
TARGETS_SRC = ROOT / "targets"  # the hand-maintained files
TARGETS_PKG = ("edgeresnet", "targets")  # where they go inside the built package
PATTERN = "*.yaml"


def target_files(src: Path = TARGETS_SRC) -> list[Path]:
    """The target files to ship; an empty or missing ``targets/`` is an error, never a wheel without targets."""
    files = sorted(p for p in src.glob(PATTERN) if p.is_file())
    if not files:
        raise FileError(f"no {PATTERN} files in {src}: a wheel without deployment targets would be useless")
    return files


def targets_output_mapping(build_lib: str, src: Path = TARGETS_SRC) -> dict[str, str]:
    """``{file in the build: source file}`` for every target file (the build_py output-mapping format)."""
    dest_dir = Path(build_lib, *TARGETS_PKG)
    return {str(dest_dir / f.name): str(f) for f in target_files(src)}


class build_py(_build_py):
    """setuptools' ``build_py`` plus the copy of ``targets/*.yaml`` into ``<build_lib>/edgeresnet/targets/``.

    In editable mode nothing is copied (like setuptools' own package data): the editable package resolves to
    the checkout, where ``targets_dir()`` finds the top-level ``targets/`` directly. The mapping is still
    reported so a strict editable install (a link tree) links the files too.
    """

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        mapping = targets_output_mapping(self.build_lib)
        dest_dir = Path(self.build_lib, *TARGETS_PKG)
        # A reused build/ must not ship a target that was deleted or renamed in targets/.
        for stale in dest_dir.glob(PATTERN):
            if str(stale) not in mapping:
                self.announce(f"removing stale target {stale}", level=logging.INFO)
                if not self.dry_run:
                    stale.unlink()
        self.mkpath(str(dest_dir))
        for dest, src in mapping.items():
            self.copy_file(src, dest)

    def get_output_mapping(self) -> dict[str, str]:
        mapping = super().get_output_mapping()
        mapping.update(targets_output_mapping(self.build_lib))
        return dict(sorted(mapping.items()))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        seen = set(outputs)
        outputs.extend(dest for dest in targets_output_mapping(self.build_lib) if dest not in seen)
        return outputs


if __name__ == "__main__":  # setuptools' build backend runs this file as __main__; tests import it
    setup(cmdclass={"build_py": build_py})
