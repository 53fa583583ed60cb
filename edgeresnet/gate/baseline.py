"""Baseline promotion: copy a validated benchmark result into the baseline directory with a manifest of
where it came from (file sha256, its own manifest, CI variables, git commit), atomically.

``edgeresnet baseline update`` is ``promote_baseline`` behind options.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError

_GIT_ENV = ("GITHUB_REPOSITORY", "GITHUB_SHA", "GITHUB_REF", "GITHUB_RUN_ID", "GITHUB_WORKFLOW", "CI_COMMIT_SHA",
            "CI_PIPELINE_ID")

DEFAULT_INTO = Path("benchmarks/baselines")


@dataclass
class Promotion:
    """What was promoted; ``to_dict()`` is the ``--json`` document."""

    baseline: Path
    manifest: Path
    sha256: str
    source: Path
    replaced_sha256: str | None
    results: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": str(self.baseline), "manifest": str(self.manifest), "sha256": self.sha256,
                "source": str(self.source), "replaced_sha256": self.replaced_sha256, "results": self.results}


def promote_baseline(result: str | Path, into: str | Path = DEFAULT_INTO, name: str | None = None) -> Promotion:
    """Promote a benchmark result to the baseline: an exact copy plus a manifest of where it came from."""
    result, into = Path(result), Path(into)
    from edgeresnet.artifacts import atomic_output, build_manifest, manifest_path, read_manifest, sha256_file
    from edgeresnet.gate import key_label, load_results, result_key

    document = load_results(result, "RESULT")
    if into.exists() and not into.is_dir():
        raise UserError(f"--into {into}: is a file; pass the baseline directory")
    target_name = name or result.name
    if not target_name or "/" in target_name or os.sep in target_name or target_name in (".", ".."):
        raise UserError(f"--name {target_name!r}: must be a plain file name such as resnet18_orin.json")
    if target_name.endswith(".json.json"):
        raise UserError(f"--name {target_name}: that is a sidecar-manifest name; choose e.g. "
                        f"{target_name[: -len('.json')]}")
    from edgeresnet.artifacts import make_output_dir

    make_output_dir(into, "--into")  # with missing parents; a file in the way is one line
    dest = into / target_name
    if dest.exists() and dest.resolve() == result.resolve():
        raise UserError(f"{result}: is already the baseline file {dest}; promote a new result instead")
    source_sha = sha256_file(result)
    previous = sha256_file(dest) if dest.exists() else None
    provenance: dict[str, Any] = {
        "path": str(result.resolve()),
        "sha256": source_sha,
        "created": document.get("created"),
        "manifest": read_manifest(result),
        "ci": {k: os.environ[k] for k in _GIT_ENV if os.environ.get(k)},
        "git": _git_state(),
    }
    keys = [key_label(result_key(r)) for r in document["results"]]
    with atomic_output(manifest_path(dest), "--into") as manifest_tmp:
        with atomic_output(dest, "--into") as data_tmp:
            shutil.copyfile(result, data_tmp)
            if sha256_file(data_tmp) != source_sha:
                raise UserError(f"{result}: changed while it was copied; run baseline update again")
            manifest = build_manifest("benchmark-baseline", data_tmp, command="baseline update",
                                      inputs={"result": result},
                                      settings={"schema": document.get("schema"), "results": keys},
                                      extra={"promoted_from": provenance, "replaces_sha256": previous})
            manifest["file"] = dest.name
            manifest_tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    return Promotion(baseline=dest, manifest=manifest_path(dest), sha256=source_sha, source=result,
                     replaced_sha256=previous, results=keys)


def _git_state() -> dict[str, Any] | None:
    """The commit the baseline was promoted at, when run inside a git checkout (best effort)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
