"""Regression-gate CLI: ``regress`` (the CI gate) and ``baseline update`` (promote a result to the baseline).

Parsing, printing and exit codes only; the statistics and verdicts live in the ``edgeresnet.gate`` package,
the Markdown and JUnit renderers in ``edgeresnet.gate.report``. Exit codes: 0 pass, 1 regression (or a
baseline result missing from the current run), 2 usage or input error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from edgeresnet.cli import common
from edgeresnet.cli.common import JsonOut


def regress(
    baseline: list[Path] = typer.Option(..., "--baseline", "-b", help="Baseline result JSON (repeat to pool "
                                        "several runs, e.g. rounds alternated with --current)."),
    current: list[Path] = typer.Option(..., "--current", "-c", help="Current result JSON (repeatable)."),
    metric: str = typer.Option("median", "--metric", help="Latency statistic to gate: median, p90 or p99."),
    tolerance: str = typer.Option("5%", "--tolerance", help="Smallest slowdown that fails, relative (5% or 0.05)."),
    confidence: str = typer.Option("0.95", "--confidence", help="Confidence for significance (0.95 or 95%)."),
    max_accuracy_drop: float = typer.Option(0.5, "--max-accuracy-drop", help="Allowed top-1 drop, in points."),
    allow_env_change: bool = typer.Option(False, "--allow-env-change", help="Compare even when target, GPU, "
                                          "TensorRT, power mode or CPU differ (the differences are reported)."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Do not fail when a baseline result (or its "
                                       "accuracy) is absent from the current run."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML here."),
    markdown: Optional[str] = typer.Option(None, "--markdown", help="Write Markdown here (- = stdout), e.g. "
                                           "$GITHUB_STEP_SUMMARY."),
    json_out: JsonOut = None,
    method: str = typer.Option("auto", "--method", help="auto (rank test for the median, bootstrap for p90/p99), "
                               "rank or bootstrap."),
    blocks: int = typer.Option(0, "--blocks", help="Rank test on the medians of N contiguous blocks per side "
                               "instead of raw samples (0 = raw samples)."),
    resamples: int = typer.Option(2000, "--resamples", help="Bootstrap resamples (p90/p99, --method bootstrap)."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
) -> None:
    """Fail a change that made a model slower or less accurate: exit 0 pass, 1 regression, 2 input error."""
    from edgeresnet.artifacts import emit_json, write_text_atomic
    from edgeresnet.gate import GateSettings, parse_fraction, to_junit, to_markdown
    from edgeresnet.gate import regress as regress_files

    settings = GateSettings(
        metric=metric, tolerance=parse_fraction(tolerance, "--tolerance"),
        confidence=parse_fraction(confidence, "--confidence"), max_accuracy_drop=max_accuracy_drop,
        allow_env_change=allow_env_change, allow_missing=allow_missing, method=method, blocks=blocks,
        resamples=resamples, seed=seed,
    ).validate()
    for option, path in (("--junit", junit), ("--markdown", markdown), ("--json", json_out)):
        if path not in (None, "-"):
            from edgeresnet.artifacts import check_output_dir

            check_output_dir(path, option)
    report = regress_files(baseline, current, settings)
    console = common.console(stderr=json_out == "-" or markdown == "-")
    _print_report(console, report)
    if junit is not None:
        write_text_atomic(junit, to_junit(report), option="--junit")
    if markdown == "-":
        typer.echo(to_markdown(report), nl=False)
    elif markdown is not None:
        write_text_atomic(markdown, to_markdown(report), option="--markdown")
    emit_json(report.to_dict(), json_out)
    raise typer.Exit(report.exit_code)


def _print_report(console: Any, report: Any) -> None:
    from rich.table import Table

    from edgeresnet.gate import HEADERS, table_rows

    table = Table(title=f"regression gate ({report.settings.metric}, tolerance {report.settings.tolerance:.1%}, "
                        f"confidence {report.settings.confidence:g})")
    for header in HEADERS:
        table.add_column(header, justify="left" if header in ("result", "verdict") else "right")
    styles = {"REGRESSION": "bold red", "MISSING": "bold red", "improvement": "green", "new": "cyan"}
    for cells in table_rows(report):
        table.add_row(*cells, style=styles.get(cells[-1]))
    console.print(table)
    for row in report.rows:
        if row.verdict in ("regression", "missing", "improvement", "new"):
            for reason in row.reasons:
                _line(console, f"{row.verdict}: {' '.join(map(str, row.key))}: {reason}")
        for warning in row.warnings:
            _line(console, f"warning: {' '.join(map(str, row.key))}: {warning}")
    if report.environment.differences:
        _line(console, "warning: environments differ (allowed): " + "; ".join(report.environment.differences))
    if report.environment.info:
        _line(console, "note: version changes: " + "; ".join(report.environment.info))
    style = "bold red" if report.failed else "bold green"
    _line(console, report.summary(), style=style)


def _line(console: Any, text: str, style: str | None = None) -> None:
    """One unwrapped line (CI logs are grepped), no rich markup interpretation of file names."""
    console.print(text, style=style, highlight=False, markup=False, soft_wrap=True)


def baseline_update(
    result: Path = typer.Argument(..., help="Benchmark result JSON to promote (validated first)."),
    into: Path = typer.Option(Path("benchmarks/baselines"), "--into", help="Baseline directory (created if needed)."),
    name: Optional[str] = typer.Option(None, "--name", help="File name in --into (default: the result's name)."),
    json_out: JsonOut = None,
) -> None:
    """Promote a benchmark result to the baseline: an exact copy plus a manifest of where it came from."""
    from edgeresnet.artifacts import check_json_dest, emit_json
    from edgeresnet.gate.baseline import promote_baseline

    check_json_dest(json_out)  # a --json PATH that cannot be written fails before the baseline is replaced
    promotion = promote_baseline(result, into, name)
    dest, keys = promotion.baseline, promotion.results
    console = common.console(stderr=json_out == "-")
    verb = "replaced" if promotion.replaced_sha256 else "created"
    _line(console, f"baseline {verb}: {dest} ({len(keys)} result{'s' if len(keys) != 1 else ''}: {', '.join(keys)})")
    _line(console, f"manifest: {promotion.manifest} (sha256 {promotion.sha256[:12]}, from {result})")
    emit_json(promotion.to_dict(), json_out)


def register(app: typer.Typer) -> None:
    """Add ``regress`` and the ``baseline`` sub-app (``baseline update``)."""
    app.command("regress")(regress)
    baseline_app = typer.Typer(help="Manage the regression gate's baselines.", no_args_is_help=True)
    baseline_app.command("update")(baseline_update)
    app.add_typer(baseline_app, name="baseline")
