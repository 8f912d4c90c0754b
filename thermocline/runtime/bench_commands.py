"""`thermocline bench`: sparse vs dense mode of the same engine (and llama.cpp), side by side."""

from __future__ import annotations

import functools
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import torch
import typer

from thermocline.errors import ThermoclineError
from thermocline.models.checkpoint import resolve_model_path
from thermocline.models.transformer import Transformer
from thermocline.runtime.bench import DecodeTiming, bench_model
from thermocline.runtime.commands import DtypeOpt, ModelArg, ModelOpt, pick_model

PROMPT = "The capital of France is"  # 5 tokens with SmolLM2's tokenizer


def _source_gguf(path: Path) -> Path | None:
    """The GGUF the weights came from, when there is one (llama.cpp runs the same weights)."""
    if path.suffix == ".gguf":
        return path
    if path.suffix == ".thermo":
        from thermocline.converter import read_artifact

        source = read_artifact(path).sources.get("model", {}).get("path")
        if source and str(source).endswith(".gguf"):
            return Path(source)
        if source:
            try:
                candidate = resolve_model_path(source)
            except ThermoclineError:
                return None
            return candidate if candidate.suffix == ".gguf" else None
    return None


def _engines(
    spec: str, dtype: str, new_tokens: int, llamacpp: bool, prompt: str
) -> list[Callable[[], DecodeTiming]]:
    """One timer per engine: the sparse engine (if the model has predictors), its dense mode,
    llama.cpp at F32 and F16 on the same weights. Each loads its model when it runs and lets
    it go after, so that one engine at a time holds memory (a GPU's, with an artifact)."""
    from thermocline.runtime.engine import load_model
    from thermocline.runtime.sparse_engine import load_artifact_model

    path = resolve_model_path(spec)
    loaded = load_model(spec, dtype)
    ids, mode = loaded.tokenizer.encode(prompt), loaded.mode
    preloaded = [loaded.model]  # the first round times this one: a model is not loaded twice
    del loaded

    def time_ours(name: str, load: Callable[[], Transformer]) -> DecodeTiming:
        return bench_model(name, dtype, load(), ids, new_tokens)

    def load_ours() -> Transformer:
        return preloaded.pop() if preloaded else load_model(spec, dtype).model

    timers = [functools.partial(time_ours, f"thermocline {mode}", load_ours)]
    if mode == "sparse":
        dense = functools.partial(load_artifact_model, path, dtype, dense_mode=True)
        timers.append(functools.partial(time_ours, "thermocline dense", lambda: dense().model))
    gguf = _source_gguf(path) if llamacpp else None
    if gguf is not None:
        from thermocline.runtime.llamacpp import gguf_baseline, llamacpp_decode

        def time_llamacpp(gguf_dtype: str) -> DecodeTiming:
            baseline = gguf_baseline(gguf, gguf_dtype)
            r = llamacpp_decode(baseline, ids, new_tokens, torch.get_num_threads())
            return DecodeTiming(
                f"llama.cpp {gguf_dtype.upper()}",
                gguf_dtype,
                r["decode_tokens_per_s"],
                r["prefill_tokens_per_s"],
                baseline.stat().st_size,  # every weight is read (tied head included)
                new_tokens,
                len(ids),
            )

        timers += [functools.partial(time_llamacpp, d) for d in ("fp32", "fp16")]
    return timers


def run_bench(
    spec: str, dtype: str, new_tokens: int, llamacpp: bool, prompt: str = PROMPT, rounds: int = 1
) -> list[DecodeTiming]:
    """A row per engine (_engines). Each is timed `rounds` times, round-robin with the order
    rotating, so that drift on a shared machine falls on every engine alike; a row is its
    median-rate round, with every round's decode rate in `decode_runs`."""
    if rounds < 1:
        raise ThermoclineError(f"--rounds must be at least 1, got {rounds}")
    timers = _engines(spec, dtype, new_tokens, llamacpp, prompt)
    runs: list[list[DecodeTiming]] = [[] for _ in timers]
    for r in range(rounds):
        # Each round starts one engine later: what runs just before an engine matters here
        # (llama.cpp's threads spin on for a while after it returns), so no engine always
        # follows the same one.
        for i in [(r + k) % len(timers) for k in range(len(timers))]:
            runs[i].append(timers[i]())
    rows = []
    for timings in runs:
        ranked = sorted(timings, key=lambda t: t.decode_tokens_per_s)
        row = ranked[(len(ranked) - 1) // 2]
        row.decode_runs = [t.decode_tokens_per_s for t in timings]
        rows.append(row)
    return rows


def format_table(rows: list[DecodeTiming]) -> str:
    lines = [
        "| engine | dtype | decode tok/s | GB/s achieved | prefill tok/s | FFN sparsity | recall "
        "| true sparsity |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        sparsity = "" if r.sparsity is None else f"{r.sparsity:.1%}"
        recall = "" if r.recall is None else f"{r.recall:.3f}"
        true_sparsity = "" if r.true_sparsity is None else f"{r.true_sparsity:.1%}"
        decode = f"{r.decode_tokens_per_s:.1f}"
        if r.decode_runs and len(r.decode_runs) > 1:
            decode += f" ({min(r.decode_runs):.1f}-{max(r.decode_runs):.1f})"
        lines.append(
            f"| {r.name} | {r.dtype} | {decode} | {r.bandwidth_gb_s:.1f} | "
            f"{r.prefill_tokens_per_s:.0f} | {sparsity} | {recall} | {true_sparsity} |"
        )
    return "\n".join(lines)


def bench(
    model: ModelArg = None,
    model_opt: ModelOpt = None,
    new_tokens: Annotated[int, typer.Option("-n", "--new-tokens", help="Tokens to decode.")] = 128,
    dtype: DtypeOpt = "fp32",
    llamacpp: Annotated[
        bool, typer.Option(help="Also time llama.cpp on the same weights (needs the bench extra).")
    ] = False,
    rounds: Annotated[
        int,
        typer.Option(
            min=1,
            help="Time every engine this many times, taking turns, and report the median "
            "(with the range): steadier figures on a busy machine.",
        ),
    ] = 1,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.")
    ] = False,
) -> None:
    """Batch-1 decode tokens/s, prefill tokens/s, bandwidth achieved, sparsity and recall:
    the sparse engine and the dense mode of the same engine on the same weights. FFN
    sparsity: the neurons the predictors ruled out. True sparsity: the neurons the
    thresholds zero, whose down rows both modes skip. GB/s: weight bytes read per second;
    the CPU's one-call decode step leaves the skipped down rows out, other paths (hot
    neurons on a GPU) count every computed neuron's rows."""
    rows = run_bench(pick_model(model, model_opt), dtype, new_tokens, llamacpp, rounds=rounds)
    if json_out:
        typer.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    typer.echo(
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; prompt {rows[0].prompt_tokens} tokens, {new_tokens} new"
        + (f"; decode: the median of {rounds} rounds (range)" if rounds > 1 else "")
    )
    typer.echo(format_table(rows))


def register(app: typer.Typer) -> None:
    app.command()(bench)
