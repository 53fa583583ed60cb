"""What every command shares: the one console helper and the option types used by several commands."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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



def recipe_option(name: str, default: Any = None, help: str | None = None, panel: str | None = None) -> Any:
    """The option of ``TrainRecipe`` field ``name``, its flag spelled from the field (``--x/--no-x`` for a
    yes/no field), so ``train``, ``cv`` and ``tune`` take every recipe flag under the one name."""
    import typing

    from edgeresnet.train.recipe import TrainRecipe, flag

    hint = typing.get_type_hints(TrainRecipe)[name]
    switch = hint is bool or bool in typing.get_args(hint)
    decls = f"{flag(name)}/--no-{flag(name)[2:]}" if switch else flag(name)
    return typer.Option(default, decls, help=help, rich_help_panel=panel)


def add_recipe_options(command: Callable[..., Any], options: Sequence[tuple[str, str | None, str]], *,
                       recipe_defaults: bool, before: str | None = None) -> Callable[..., Any]:
    """Give ``command`` one option per ``(field, help, panel)`` of ``TrainRecipe`` (before option ``before``, else
    last); their values reach it as ``**recipe``. Type, flag and default come from the field: the recipe's default
    with ``recipe_defaults`` (train shows it in --help), else None = not given (the --config file's value wins)."""
    import inspect
    import typing

    from edgeresnet.train.recipe import TrainRecipe

    hints = typing.get_type_hints(TrainRecipe)
    defaults = TrainRecipe()
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                               annotation=hints[name] if recipe_defaults else Optional[hints[name]],
                               default=recipe_option(name, getattr(defaults, name) if recipe_defaults else None,
                                                     help, panel))
             for name, help, panel in options]
    present = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in inspect.signature(command, eval_str=True).parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
    at = next((i for i, p in enumerate(present) if p.name == before), len(present))
    command.__signature__ = inspect.Signature([*present[:at], *added, *present[at:]])  # type: ignore[attr-defined]
    return command
