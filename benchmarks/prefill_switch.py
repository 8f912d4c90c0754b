"""Where prefill should switch from per-token sparse kernels to one masked dense GEMM.

SparseFeedForward computes a prompt of N >= dense_min_tokens tokens as one GEMM over every
neuron with the predicted masks applied, and fewer tokens one by one through the sparse
kernels (sparse_engine.DENSE_MIN_TOKENS). This times a whole-model prefill of the first N
tokens of WikiText-2's eval split both ways on a .thermo artifact (CPU only), best of
--reps, the two ways interleaved. One token is the fused decode step either way.

    .venv/bin/python benchmarks/prefill_switch.py out/smollm2-wikitext/model.thermo --dtype fp16
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import typer

from thermocline.corpus import read_text
from thermocline.runtime.bench import sparse_ffns
from thermocline.runtime.generate import prefill
from thermocline.runtime.sparse_engine import load_artifact_model


def prefill_seconds(model, ids: list[int], dense_min_tokens: int) -> float:
    for ffn in sparse_ffns(model):
        ffn.dense_min_tokens = dense_min_tokens
    cache = model.new_cache(1, len(ids))
    start = time.perf_counter()
    prefill(model, ids, cache)
    return time.perf_counter() - start


def main(
    artifact: Path,
    dtype: str = "fp16",
    tokens: str = "2,3,4,6,8,16,32",
    reps: int = 7,
    threads: int = 2,
) -> None:
    torch.set_num_threads(threads)
    loaded = load_artifact_model(artifact, dtype)
    model = loaded.model
    text_ids = loaded.tokenizer.encode(read_text("wikitext-2", "eval"))
    print(f"{artifact.name}, --dtype {dtype}, {threads} threads, best of {reps}, prefill ms:")
    print("| tokens | per-token sparse kernels | masked dense GEMM | dense / per-token |")
    print("|---:|---:|---:|---:|")
    for n in (int(t) for t in tokens.split(",")):
        ids = text_ids[:n]
        per_token = dense = float("inf")
        for _ in range(reps):  # interleaved: a drifting machine slows both alike
            per_token = min(per_token, prefill_seconds(model, ids, n + 1))
            dense = min(dense, prefill_seconds(model, ids, n))
        print(f"| {n} | {per_token * 1e3:.1f} | {dense * 1e3:.1f} | {dense / per_token:.2f} |")


if __name__ == "__main__":
    typer.run(main)
