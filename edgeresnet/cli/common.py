"""What every command shares: the one console helper and the option types used by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer


def console(json_dest: str | None = None, *, stderr: bool = False, wide: bool = False) -> Any:
    """Human output: on stderr when ``--json -`` owns stdout (or ``stderr``); ``wide`` keeps tables 200
    columns wide when the output is piped or captured instead of squeezing them into 80."""
    from rich.console import Console

    to_stderr = stderr or json_dest == "-"
    out = Console(stderr=to_stderr)
    if wide and not out.is_terminal:
        out = Console(stderr=to_stderr, width=200)
    return out


def warn(messages: list[str], out: Any = None) -> None:
    """``warning: ...`` lines (stderr by default)."""
    out = out if out is not None else console(stderr=True)
    for message in messages:
        out.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


JsonOut = Annotated[Optional[str], typer.Option("--json", help="Write the result as JSON to PATH ('-' = stdout).")]
OutDir = Annotated[Path, typer.Option("--out", help="Output directory.")]
