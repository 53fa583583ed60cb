"""The ``edgeresnet`` Typer app and the one place where errors become exit codes.

Each command group lives in its own module with a ``register(app)`` function; heavy libraries are
imported inside the commands so ``edgeresnet --help`` stays fast and a user without TensorRT never
pays for it.
"""

from __future__ import annotations

import sys

import typer

from edgeresnet import __version__
from edgeresnet.cli import advanced, bench, compress, export, gate, trt, workflow
from edgeresnet.errors import UserError

app = typer.Typer(
    name="edgeresnet",
    help="Train, compress, export, build, benchmark and regression-guard ResNet-18/50 for Jetson and desktop GPUs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgeresnet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """edgeresnet: ResNet-18/50 from training to a measured TensorRT engine."""


for _module in (workflow, export, trt, bench, gate, compress, advanced):
    _module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors print one line on stderr and exit non-zero, never a traceback.

    Typer (standalone mode) handles usage errors, ``--help`` and ``typer.Exit``; everything a user can fix
    is a ``UserError``.
    """
    try:
        app(args=argv, prog_name="edgeresnet")
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
