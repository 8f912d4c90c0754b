"""CLI commands that run a model: generate, perplexity, inspect."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from thermocline.corpus import DEFAULT_CORPUS, SPLITS, read_text
from thermocline.errors import ThermoclineError
from thermocline.models.checkpoint import DEFAULT_MODEL

ModelArg = Annotated[
    str | None,
    typer.Argument(
        help="Model: a known name (smollm2-135m), an HF directory, a .gguf or a .thermo file.",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Same as the MODEL argument.", show_default=False),
]
DtypeOpt = Annotated[
    str,
    typer.Option(
        help="Weight dtype: fp32, fp16 or bf16. 16-bit weights are read as they are and "
        "computed in fp32 (half the bytes of fp32 per token)."
    ),
]


def pick_model(argument: str | None, option: str | None) -> str:
    """`--model M` or M as the first argument, both accepted; the default model otherwise."""
    if argument and option and argument != option:
        raise ThermoclineError(f"two different models given: {argument!r} and --model {option!r}")
    return argument or option or DEFAULT_MODEL


def generate(
    model: ModelArg = None,
    model_opt: ModelOpt = None,
    prompt: Annotated[
        str, typer.Option("--prompt", "-p", help="The prompt (or the user message with --chat).")
    ] = "The capital of France is",
    max_new_tokens: Annotated[
        int, typer.Option("-n", "--max-new-tokens", help="Tokens to generate at most.")
    ] = 64,
    chat: Annotated[
        bool, typer.Option(help="Wrap the prompt in the model's chat template.")
    ] = False,
    temperature: Annotated[float, typer.Option(help="0 for greedy decoding.")] = 0.0,
    top_k: Annotated[int, typer.Option(help="Sample from the k most likely tokens (0: all).")] = 0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass (1: off).")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Seed for sampling.")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (repeatable).")] = None,
    dtype: DtypeOpt = "fp32",
) -> None:
    """Generate text from a prompt, printed as it is produced."""
    from thermocline.runtime.engine import load_model
    from thermocline.runtime.generate import Completion, SamplingParams, stream_text

    params = SamplingParams(max_new_tokens, temperature, top_k, top_p, seed, stop or [])
    loaded = load_model(pick_model(model, model_opt), dtype)
    tok = loaded.tokenizer
    ids = tok.encode_chat([{"role": "user", "content": prompt}]) if chat else tok.encode(prompt)
    if not chat:
        sys.stdout.write(prompt)
    result, start = Completion(), time.perf_counter()
    for piece in stream_text(loaded.model, tok, ids, params, result):
        sys.stdout.write(piece)
        sys.stdout.flush()
    seconds = time.perf_counter() - start
    sys.stdout.write("\n")
    typer.secho(
        f"[{loaded.mode}] {result.completion_tokens} tokens in {seconds:.2f} s "
        f"({result.completion_tokens / seconds:.1f} tokens/s incl. prefill of {len(ids)})",
        err=True,
        dim=True,
    )


def perplexity(
    model: ModelArg = None,
    model_opt: ModelOpt = None,
    text: Annotated[str, typer.Option(help="Text file, or a known corpus name.")] = DEFAULT_CORPUS,
    split: Annotated[
        str,
        typer.Option(
            help=f"Part of the corpus: {', '.join(SPLITS)} (see shared/corpora/README.md)."
        ),
    ] = "eval",
    window: Annotated[int, typer.Option(help="Tokens per non-overlapping window.")] = 512,
    batch: Annotated[int, typer.Option(help="Windows per forward pass.")] = 4,
    max_tokens: Annotated[
        int | None, typer.Option(help="Score only the first N tokens of the split.")
    ] = None,
    dtype: DtypeOpt = "fp32",
    thresholds: Annotated[
        Path | None,
        typer.Option(
            help="A profile folder: apply its calibrated FFN thresholds exactly (oracle sparsity, no predictor) and report the realized sparsity."
        ),
    ] = None,
    predictors: Annotated[
        Path | None,
        typer.Option(
            help="A predictors folder: compute only predicted-active neurons; report realized sparsity and recall."
        ),
    ] = None,
    profile: Annotated[
        Path | None,
        typer.Option(
            help="With --predictors: the profile whose thresholds apply (default: the one they were trained on)."
        ),
    ] = None,
) -> None:
    """Perplexity of a model on a text, over non-overlapping windows."""
    from contextlib import nullcontext

    from thermocline.predictor_trainer import predicted_masks_from
    from thermocline.profiler import apply_thresholds, measure_sparsity
    from thermocline.runtime.engine import load_model
    from thermocline.runtime.perplexity import perplexity as run_perplexity

    loaded = load_model(pick_model(model, model_opt), dtype)
    if thresholds is not None:
        if loaded.mode != "dense":
            raise ThermoclineError(
                "--thresholds applies to a dense checkpoint, not a .thermo artifact"
            )
        apply_thresholds(loaded.model, thresholds)
    if profile is not None and predictors is None:
        raise ThermoclineError(
            "--profile goes with --predictors; for a profile's thresholds alone use --thresholds"
        )
    if predictors is not None and loaded.mode != "dense":
        raise ThermoclineError(
            "--predictors applies to a dense checkpoint; a .thermo artifact runs its own"
        )
    ids = loaded.tokenizer.encode(read_text(text, split))
    masked = (
        predicted_masks_from(loaded.model, predictors, profile)
        if predictors is not None
        else nullcontext()
    )
    with (
        measure_sparsity(loaded.model) if thresholds is not None else nullcontext() as meter,
        masked as masks,
    ):
        r = run_perplexity(loaded.model, ids, window, batch, max_tokens, progress=True)
    mode = (
        f"{loaded.mode}, thresholds of {thresholds}: realized sparsity {meter.sparsity:.1%}"
        if meter
        else loaded.mode
    )
    typer.echo(
        f"perplexity {r.perplexity:.4f}  ({mode}, {text} {split}, {r.tokens} tokens scored in "
        f"{r.windows} windows of {r.window}, {r.tokens_per_second:.0f} tokens/s)"
    )
    if masks:
        typer.echo(masks.summary())


def inspect(
    path: Annotated[
        str, typer.Argument(help="A checkpoint, a known model name, or a .thermo artifact.")
    ] = DEFAULT_MODEL,
) -> None:
    """What a checkpoint or artifact holds: architecture, sizes, dtype, tensors."""
    from thermocline.models.inspect import describe_checkpoint

    typer.echo(describe_checkpoint(path))


def register(app: typer.Typer) -> None:
    app.command()(generate)
    app.command()(perplexity)
    app.command()(inspect)
