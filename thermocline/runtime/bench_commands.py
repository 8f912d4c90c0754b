"""`thermocline bench`: sparse vs dense mode of the same engine (and llama.cpp), side by side."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Annotated

import torch
import typer

from thermocline.errors import ThermoclineError
from thermocline.models.checkpoint import resolve_model_path
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


def run_bench(
    spec: str, dtype: str, new_tokens: int, llamacpp: bool, prompt: str = PROMPT
) -> list[DecodeTiming]:
    """Rows: the sparse engine (if the model has predictors), its dense mode, llama.cpp."""
    from thermocline.runtime.engine import load_model
    from thermocline.runtime.sparse_engine import load_artifact_model

    path = resolve_model_path(spec)
    loaded = load_model(spec, dtype)
    ids = loaded.tokenizer.encode(prompt)
    rows = [bench_model(f"thermocline {loaded.mode}", dtype, loaded.model, ids, new_tokens)]
    if loaded.mode == "sparse":
        dense = load_artifact_model(path, dtype, dense_mode=True)
        rows.append(bench_model("thermocline dense", dtype, dense.model, ids, new_tokens))
    gguf = _source_gguf(path) if llamacpp else None
    if gguf is not None:
        from thermocline.runtime.llamacpp import gguf_baseline, llamacpp_decode

        for gguf_dtype in ("fp32", "fp16"):
            baseline = gguf_baseline(gguf, gguf_dtype)
            r = llamacpp_decode(baseline, ids, new_tokens, torch.get_num_threads())
            bytes_per_token = baseline.stat().st_size  # every weight is read (tied head included)
            rows.append(
                DecodeTiming(
                    f"llama.cpp {gguf_dtype.upper()}",
                    gguf_dtype,
                    r["decode_tokens_per_s"],
                    r["prefill_tokens_per_s"],
                    bytes_per_token,
                    new_tokens,
                    len(ids),
                )
            )
    return rows


def format_table(rows: list[DecodeTiming]) -> str:
    lines = [
        "| engine | dtype | decode tok/s | GB/s achieved | prefill tok/s | FFN sparsity | recall |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        sparsity = "" if r.sparsity is None else f"{r.sparsity:.1%}"
        recall = "" if r.recall is None else f"{r.recall:.3f}"
        lines.append(
            f"| {r.name} | {r.dtype} | {r.decode_tokens_per_s:.1f} | {r.bandwidth_gb_s:.1f} | "
            f"{r.prefill_tokens_per_s:.0f} | {sparsity} | {recall} |"
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
    json_out: Annotated[
        bool, typer.Option("--json", help="Print JSON instead of a table.")
    ] = False,
) -> None:
    """Batch-1 decode tokens/s, prefill tokens/s, bandwidth achieved, sparsity and recall:
    the sparse engine and the dense mode of the same engine on the same weights."""
    rows = run_bench(pick_model(model, model_opt), dtype, new_tokens, llamacpp)
    if json_out:
        typer.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    typer.echo(
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; prompt {rows[0].prompt_tokens} tokens, {new_tokens} new"
    )
    typer.echo(format_table(rows))


def register(app: typer.Typer) -> None:
    app.command()(bench)
