"""What the cv, tune and ensemble stages share: their progress bar and the check of a results folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeresnet.errors import UserError


def progress_bar(console: Any, enabled: bool) -> Any:
    """A rich progress display whose tasks carry a ``stats`` field (a fold's or trial's latest numbers)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[stats]}"), console=console, disable=not enabled, transient=False)


def quiet_console(console: Any) -> Any:
    """The caller's console, or one that prints nothing (an API call without a console)."""
    if console is not None:
        return console
    from rich.console import Console

    return Console(quiet=True)


def check_results_dir(out: Path, marker: str, overwrite: bool) -> Path:
    """Refuse an --out that cannot hold the results before any work; it is created (with parents) later."""
    from edgeresnet.artifacts import check_output_folder

    check_output_folder(out)
    if (out / marker).exists() and not overwrite:
        raise UserError(f"--out {out}: already holds results ({marker}); pass --overwrite or choose another --out")
    return out
