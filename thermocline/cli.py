"""The `thermocline` command: one typer command per stage, each a thin wrapper.

Each stage keeps its command next to its code (`<stage>/commands.py`); this module only
assembles the app and turns a ThermoclineError into one clear line and a non-zero exit.
"""

from __future__ import annotations

import sys

import typer

from thermocline.errors import ThermoclineError

app = typer.Typer(
    name="thermocline",
    help="Run LLMs with hot FFN neurons on the GPU and cold ones on the CPU (PowerInfer-style).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    # PLACEHOLDER from thermocline.placement_solver import commands as placement_commands
    from thermocline.runtime import commands as runtime_commands

    runtime_commands.register(app)
    # PLACEHOLDER placement_commands.register(app)


def main() -> None:
    _register()
    try:
        app()
    except ThermoclineError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
