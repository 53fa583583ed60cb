"""The benchmark stage: measure models (or import a trtexec run) and write the results files the options ask for.

Why here: the command line, the API and scripts share one path from options to files: the checks on the
inputs, the progress bar, the measuring (``core.run_benchmark``) or the import (``trtexec_import``), and the
``--json`` / ``--out`` files, one per MODEL with ``split``. Printing stays with the caller: ``on_measured`` sees
the document before any file is written, and the paths written come back in ``BenchmarkOutput``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeresnet.bench.artifact import BenchSettings
from edgeresnet.errors import UserError

Document = dict[str, Any]


@dataclass
class BenchmarkOutput:
    """The results document and the files written for it (as named by the options), in the order written."""

    document: Document
    written: list[str] = field(default_factory=list)


def benchmark(
    models: Sequence[Path],
    settings: BenchSettings,
    *,
    data: str | None = None,
    accuracy: bool | None = None,
    rounds: int = 1,
    split: bool = False,
    json_out: str | None = None,
    out: Path | None = None,
    progress: bool = False,
    on_measured: Callable[[Document], None] | None = None,
) -> BenchmarkOutput:
    """Measure ``models`` (interleaved in ``rounds`` > 1) and write ``json_out`` (a path; '-' is the caller's to
    print) and one file in ``out``, or with ``split`` one file per model there. ``accuracy`` None: on with ``data``."""
    if not models:
        raise UserError("MODEL: pass a checkpoint, ONNX file or engine to benchmark (or --from-trtexec LOG)")
    if split:
        if out is None:
            raise UserError("--split: needs --out DIR, where one results file per MODEL goes")
        stems = [m.stem for m in models]
        twice = sorted({s for s in stems if stems.count(s) > 1})
        if twice:
            raise UserError(f"--split: several MODELs are named {twice[0]!r}; give them distinct file names")
    if accuracy and data is None:
        raise UserError("--accuracy: needs --data (digits or an ImageFolder) to measure on")
    settings.validate()
    if json_out and json_out != "-":
        from edgeresnet.artifacts import check_output_dir

        check_output_dir(json_out, "--json")
    for model in models:
        if not model.exists():
            raise UserError(f"{model}: model file not found; check the path")
    from edgeresnet.bench.core import run_benchmark
    from edgeresnet.bench.rundir import console_progress

    update, finish = console_progress() if progress else (None, lambda: None)
    try:
        document = run_benchmark(models, settings, data=data, accuracy=accuracy is not False, progress=update,
                                 rounds=rounds)
    finally:
        finish()
    if on_measured is not None:
        on_measured(document)
    inputs = {f"model{i}": m for i, m in enumerate(models)}
    if not split:
        return BenchmarkOutput(document, _write_results(document, json_out, out, inputs))
    written = _write_results(document, json_out, None, inputs)
    for model in models:
        own = [r for r in document["results"] if r["artifact"] == str(model)]
        if own:
            written += _write_results({**document, "results": own}, None, out, {"model0": model}, stem=model.stem)
    return BenchmarkOutput(document, written)


def import_trtexec_run(
    files: Sequence[Path],
    *,
    batch: int | None = None,
    precision: str | None = None,
    model_name: str | None = None,
    target: str | None = None,
    seed: int = 0,
    json_out: str | None = None,
    out: Path | None = None,
    on_measured: Callable[[Document], None] | None = None,
) -> BenchmarkOutput:
    """A results document from one trtexec run (its log and/or ``--exportTimes`` JSON), written like ``benchmark``'s."""
    from edgeresnet.bench.schema import make_document
    from edgeresnet.bench.trtexec_import import import_trtexec

    result, environment = import_trtexec(list(files), batch=batch, precision=precision, model_name=model_name,
                                         target=target, seed=seed)
    document = make_document(environment, [result])
    if on_measured is not None:
        on_measured(document)
    return BenchmarkOutput(document, _write_results(document, json_out, out,
                                                    {f"trtexec{i}": f for i, f in enumerate(files)}))


def _write_results(document: Document, json_dest: str | None, out_dir: Path | None, inputs: dict[str, Any],
                   stem: str | None = None) -> list[str]:
    """Validate ``document``, then write it to ``json_dest`` (unless '-') and into ``out_dir``, named after its
    first result; the paths written."""
    from edgeresnet.bench.schema import validate, write_results

    validate(document, "benchmark results")
    written = []
    if json_dest and json_dest != "-":
        write_results(json_dest, document, option="--json", inputs=inputs)
        written.append(json_dest)
    if out_dir is not None:
        from edgeresnet.artifacts import make_output_dir

        make_output_dir(out_dir, "--out")  # with missing parents; a file in the way is one line
        first = document["results"][0]
        name = _file_slug(f"{stem or first['model']}_{first['backend']}_{first['precision']}_{first['target']}")
        path = out_dir / f"{name}.json"
        write_results(path, document, option="--out", inputs=inputs)
        written.append(str(path))
    return written


def _file_slug(text: str) -> str:
    """A file name stem from a result's model/backend/precision/target (no path separators or spaces)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "results"
