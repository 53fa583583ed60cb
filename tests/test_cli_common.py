"""The CLI's shape: one console helper, one way to register commands, shared option types."""

from __future__ import annotations

import ast
from pathlib import Path

import edgeresnet.cli

CLI_DIR = Path(edgeresnet.cli.__file__).parent
MODULES = sorted(p for p in CLI_DIR.glob("*.py") if p.name not in ("__init__.py", "common.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_one_console_helper_in_cli_common():
    """Every command makes its rich Console through cli.common.console (stderr for --json -)."""
    for path in MODULES:
        tree = _tree(path)
        helpers = [n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_console"]
        assert not helpers, f"{path.name} defines its own _console"
        direct = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                  and n.func.id == "Console"]
        assert not direct, f"{path.name} builds a rich Console itself at lines {direct}"


def test_commands_are_module_functions_registered_in_register():
    """One registration style: module-level functions, ``register(app)`` calls ``app.command(name)(fn)``."""
    for path in MODULES:
        tree = _tree(path)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                decorators = [ast.unparse(d) for d in node.decorator_list]
                assert not any(".command" in d for d in decorators), f"{path.name}:{node.name} uses a decorator"
                nested = [n.name for n in node.body if isinstance(n, ast.FunctionDef)]
                assert not nested, f"{path.name}:{node.name} nests {nested}"


def test_every_command_is_still_there():
    import typer.main

    from edgeresnet.cli.main import app

    group = typer.main.get_group(app)
    assert sorted(group.commands) == sorted([
        "train", "import", "evaluate", "demo", "export", "verify", "build", "targets", "benchmark", "compare",
        "report", "regress", "baseline", "prune", "distill", "calibrate", "qat", "cv", "ensemble", "tune"])
    assert sorted(group.commands["targets"].commands) == ["list", "show"]
    assert sorted(group.commands["baseline"].commands) == ["update"]


def test_console_goes_to_stderr_for_json_stdout():
    from edgeresnet.cli.common import console

    assert console("-").stderr and not console("out.json").stderr and not console(None).stderr
    assert console(None, stderr=True).stderr


def test_shared_json_option():
    """``--json`` is one Annotated definition (cli.common.JsonOut) across the stage commands."""
    import typer.main

    from edgeresnet.cli.main import app

    group = typer.main.get_group(app)
    helps = set()
    for name in ("build", "calibrate", "qat", "prune", "distill", "export", "verify", "regress"):
        (option,) = [p for p in group.commands[name].params if "--json" in p.opts]
        helps.add(option.help)
    helps.add(group.commands["baseline"].commands["update"].params[-1].help)
    assert helps == {"Write the result as JSON to PATH ('-' = stdout)."}
