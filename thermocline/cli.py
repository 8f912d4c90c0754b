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
    """Commands in pipeline order; each stage module adds its own."""
    from thermocline.converter import commands as converter
    from thermocline.placement_solver import commands as placement
    from thermocline.predictor_trainer import commands as predictor_trainer
    from thermocline.profiler import commands as profiler
    from thermocline.runtime import bench_commands, serve_commands
    from thermocline.runtime import commands as runtime

    for stage in (
        profiler,
        predictor_trainer,
        placement,
        converter,
        runtime,
        bench_commands,
        serve_commands,
    ):
        stage.register(app)


def main() -> None:
    _register()
    try:
        app()
    except ThermoclineError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
