"""CLI command `convert`: checkpoint (+ placement, predictors, profile) -> model.thermo."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from thermocline.runtime.commands import DtypeOpt, ModelArg, ModelOpt, pick_model


def convert(
    model: ModelArg = None,
    model_opt: ModelOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The .thermo file to write.")] = Path(
        "model.thermo"
    ),
    placement: Annotated[
        Path | None, typer.Option(help="placement.json from `thermocline place`.")
    ] = None,
    predictors: Annotated[
        Path | None, typer.Option(help="Directory from `thermocline train-predictors`.")
    ] = None,
    profile: Annotated[
        Path | None, typer.Option(help="Profile directory: activation thresholds.")
    ] = None,
    dtype: DtypeOpt = "fp16",
) -> None:
    """Pack a model into one .thermo file: neurons hot-first, hot/cold split, predictors.

    Without --placement and --predictors it writes a dense artifact of the same format.
    """
    from thermocline.converter.writer import convert as run_convert

    start = time.perf_counter()
    path = run_convert(
        pick_model(model, model_opt), out, placement, predictors, profile, dtype, progress=True
    )
    size = path.stat().st_size
    typer.echo(
        f"wrote {path} ({size / 2**20:.1f} MiB, {dtype}) in {time.perf_counter() - start:.1f} s"
    )


def register(app: typer.Typer) -> None:
    app.command()(convert)
