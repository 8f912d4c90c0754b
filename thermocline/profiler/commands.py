"""CLI: `thermocline profile` (a thin wrapper around profile_model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from thermocline.corpus import DEFAULT_CORPUS, SPLITS
from thermocline.runtime.commands import DtypeOpt, ModelArg, ModelOpt, pick_model


def profile(
    model: ModelArg = None,
    model_opt: ModelOpt = None,
    corpus: Annotated[
        str,
        typer.Option(
            help="Text, .jsonl, .json or .parquet file, a folder of them, a known corpus name or a hub dataset NAME[:CONFIG]."
        ),
    ] = DEFAULT_CORPUS,
    out: Annotated[Path, typer.Option(help="The profile folder to write.")] = Path("profile"),
    tokens: Annotated[
        int, typer.Option(help="Tokens to profile at most (fewer if the split is shorter).")
    ] = 1_000_000,
    seq_len: Annotated[int, typer.Option(help="Tokens per non-overlapping window.")] = 512,
    batch: Annotated[int, typer.Option(help="Windows per forward pass.")] = 8,
    target_sparsity: Annotated[
        float | None,
        typer.Option(
            help="silu/gelu models: share of FFN activations the thresholds make inactive (default 0.5). ReLU-family models use their exact zeros.",
            show_default=False,
        ),
    ] = None,
    split: Annotated[
        str, typer.Option(help=f"Part of the corpus: {', '.join(SPLITS)}.")
    ] = "calibration",
    train_tokens: Annotated[
        int,
        typer.Option(
            help="Tokens of predictor training data (FFN inputs + active masks), spread over the corpus."
        ),
    ] = 100_000,
    shard_tokens: Annotated[int, typer.Option(help="Training tokens per shard file.")] = 4096,
    calib_tokens: Annotated[
        int, typer.Option(help="Tokens the thresholds are calibrated on, spread over the corpus.")
    ] = 16_384,
    dtype: DtypeOpt = "fp32",
    device: Annotated[str, typer.Option(help="auto (cuda when available), cpu or cuda.")] = "auto",
    force: Annotated[
        bool, typer.Option(help="Redo the profile even when it is up to date.")
    ] = False,
) -> None:
    """Profile which FFN neurons fire on a corpus: counts, thresholds, skew, predictor training data."""
    from thermocline.profiler import ProfileConfig, load_profile, profile_model

    config = ProfileConfig(
        tokens,
        seq_len,
        batch,
        target_sparsity,
        split,
        train_tokens,
        shard_tokens,
        calib_tokens,
        dtype,
        device,
        force,
    )
    spec = pick_model(model, model_opt)
    result = load_profile(profile_model(spec, corpus, out, config))
    meta, layers = result.meta, result.meta["layers"]
    if result.config.zero_sparse and target_sparsity is not None:
        typer.secho(
            f"note: {result.config.activation} uses its exact zeros; --target-sparsity ignored",
            err=True,
            dim=True,
        )
    mean = {
        k: sum(layer[k] for layer in layers) / len(layers)
        for k in ("sparsity", "top10_share", "top20_share", "gini")
    }
    sparsities = [layer["sparsity"] for layer in layers]
    typer.echo(
        f"{out}: {meta['tokens']:,} tokens of {meta['corpus']} ({meta['split']}) in {meta['seconds']:.1f} s "
        f"({meta['tokens'] / max(meta['seconds'], 1e-9):,.0f} tokens/s), {meta['train_tokens']:,} training tokens "
        f"in {len(meta['shards'])} shard files\n"
        f"sparsity {mean['sparsity']:.1%} (layers {min(sparsities):.1%}..{max(sparsities):.1%}), "
        f"top 10% of neurons cover {mean['top10_share']:.1%}, top 20% {mean['top20_share']:.1%}, gini {mean['gini']:.3f}"
    )


def register(app: typer.Typer) -> None:
    app.command()(profile)
