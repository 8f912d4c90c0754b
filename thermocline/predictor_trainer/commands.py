"""CLI: `thermocline train-predictors` (a thin wrapper of train_predictors)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from thermocline.errors import ThermoclineError
from thermocline.predictor_trainer.config import TrainConfig

DEFAULTS = TrainConfig()


def parse_ranks(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(r) for r in text.split(","))
    except ValueError:
        raise ThermoclineError(
            f"--ranks takes comma-separated integers, e.g. 16,32,64; got {text!r}"
        ) from None


def summary(meta: dict[str, Any]) -> str:
    """One line on a predictors.json: means over layers, size, time."""
    layers = meta["layers"]
    mean = {
        k: sum(layer[k] for layer in layers) / len(layers)
        for k in ("recall", "precision", "predicted_sparsity", "true_sparsity")
    }
    return (
        f"{len(layers)} layers in {meta['train_seconds']:.0f} s: mean held-out recall "
        f"{mean['recall']:.3f}, precision {mean['precision']:.3f}, predicted sparsity "
        f"{mean['predicted_sparsity']:.3f} (true {mean['true_sparsity']:.3f}); "
        f"{meta['bytes'] / 1e6:.2f} MB = {meta['bytes'] / meta['ffn_bytes']:.1%} of the FFN bytes"
    )


def train_predictors_command(
    profile: Annotated[Path, typer.Option(help="Profile folder written by `thermocline profile`.")],
    out: Annotated[Path, typer.Option(help="Predictors folder to write.")] = Path("predictors"),
    recall: Annotated[
        float, typer.Option(help="Held-out recall each layer's logit threshold is tuned to.")
    ] = DEFAULTS.recall,
    ranks: Annotated[
        str, typer.Option(help="Rank ladder the per-layer search walks up.")
    ] = ",".join(map(str, DEFAULTS.ranks)),
    max_bytes_share: Annotated[
        float, typer.Option(help="Largest predictor as a share of its layer's FFN bytes.")
    ] = DEFAULTS.max_bytes_share,
    tolerance: Annotated[
        float, typer.Option(help="Predicted-sparsity gain a larger rank must bring.")
    ] = DEFAULTS.tolerance,
    epochs: Annotated[
        int, typer.Option(help="Epochs at most for the chosen rank (early stopping).")
    ] = DEFAULTS.epochs,
    search_epochs: Annotated[
        int, typer.Option(help="Epochs each ladder rank trains before the choice.")
    ] = DEFAULTS.search_epochs,
    batch: Annotated[int, typer.Option(help="Tokens per step.")] = DEFAULTS.batch,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = DEFAULTS.lr,
    max_tokens: Annotated[
        int, typer.Option(help="Tokens per layer read from the shards (0: all).")
    ] = DEFAULTS.max_tokens or 0,
    holdout: Annotated[
        float, typer.Option(help="Share of them held out: early stopping, thresholds, metrics.")
    ] = DEFAULTS.holdout,
    device: Annotated[str, typer.Option(help="auto (a GPU when there is one), cpu or cuda.")] = (
        DEFAULTS.device
    ),
    threads: Annotated[int, typer.Option(help="CPU threads (0: all cores).")] = DEFAULTS.threads,
    seed: Annotated[int, typer.Option(help="Seed for initialization and shuffling.")] = (
        DEFAULTS.seed
    ),
) -> None:
    """Train one low-rank predictor of the active FFN neurons per layer (adaptive rank)."""
    from thermocline.predictor_trainer.io import load_predictors
    from thermocline.predictor_trainer.train import train_predictors

    config = TrainConfig(
        recall=recall,
        ranks=parse_ranks(ranks),
        max_bytes_share=max_bytes_share,
        tolerance=tolerance,
        epochs=epochs,
        search_epochs=search_epochs,
        batch=batch,
        lr=lr,
        max_tokens=max_tokens or None,
        holdout=holdout,
        device=device,
        threads=threads,
        seed=seed,
    )
    path = train_predictors(profile, out, config)
    typer.echo(f"wrote {path}: {summary(load_predictors(path).meta)}")


def register(app: typer.Typer) -> None:
    app.command("train-predictors")(train_predictors_command)
