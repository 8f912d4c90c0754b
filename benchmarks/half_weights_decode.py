"""16-bit weights on the CPU: thermocline's half-weights path vs torch's own 16-bit path.

The same SmolLM2 weights loaded as fp16 and bf16, each run (a) as torch runs them (16-bit
weights and activations) and (b) through runtime/half_weights.py (16-bit weights, fp32
activations, numba GEMV for one token), plus fp32 for reference. Decode tokens/s after a
5-token prompt, the models taking turns rep by rep so that load on a shared machine hits them
alike; medians. Then where a half-weights fp16 decode step spends its time: inside the GEMV
kernel, in the Python wrappers around it, and in everything else (the small torch ops).

    .venv/bin/python benchmarks/half_weights_decode.py [--reps 4] [--tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from thermocline.models import build_model, load_checkpoint
from thermocline.models.transformer import Transformer
from thermocline.runtime.generate import decode_one, prefill
from thermocline.runtime.half_weights import HalfLinear, use_half_weights
from thermocline.runtime.kernels import cpu_gemv


def decode_rate(model: Transformer, tokens: int) -> float:
    cache = model.new_cache(1, 16 + tokens)
    prefill(model, [1, 2, 3, 4, 5], cache)
    for position in range(5, 13):  # warm-up
        decode_one(model, 7, position, cache)
    start = time.perf_counter()
    for position in range(13, 13 + tokens):
        decode_one(model, 7, position, cache)
    return tokens / (time.perf_counter() - start)


def time_split(model: Transformer, tokens: int) -> tuple[float, float, float]:
    """(ms per token in all, in HalfLinear.forward, in the GEMV kernel itself)."""
    spent = {"linear": 0.0, "kernel": 0.0}

    def timed(function, key):
        def wrapper(*args):
            start = time.perf_counter()
            result = function(*args)
            spent[key] += time.perf_counter() - start
            return result

        return wrapper

    linear, kernel = HalfLinear.forward, cpu_gemv.gemv_kernel
    HalfLinear.forward, cpu_gemv.gemv_kernel = timed(linear, "linear"), timed(kernel, "kernel")
    try:
        decode_rate(model, 4)  # warm-up of the timers' path
        spent.update(linear=0.0, kernel=0.0)
        total = 1 / decode_rate(model, tokens)  # seconds per token
    finally:
        HalfLinear.forward, cpu_gemv.gemv_kernel = linear, kernel
    return total * 1e3, spent["linear"] / tokens * 1e3, spent["kernel"] / tokens * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.model)
    models = {}
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        models[f"torch {name}"] = build_model(checkpoint, dtype)
        models[f"half weights {name}"] = use_half_weights(build_model(checkpoint, dtype))
    models["fp32"] = build_model(checkpoint, torch.float32)
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.reps):
        for name, model in models.items():
            rates[name].append(decode_rate(model, args.tokens))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.reps} reps")
    print("| model | decode tok/s (median) | all reps |")
    print("|---|---:|---|")
    for name, values in rates.items():
        reps = " ".join(f"{v:.1f}" for v in values)
        print(f"| {name} | {statistics.median(values):.1f} | {reps} |")
    weights = models["half weights fp16"]
    total, linear, kernel = time_split(weights, args.tokens)
    gemv_bytes = sum(m.weight.nbytes for m in weights.modules() if isinstance(m, HalfLinear))
    print(
        f"\nhalf weights fp16, per token: {total:.1f} ms in all; GEMV kernel {kernel:.1f} ms "
        f"({gemv_bytes / 1e6:.0f} MB, {gemv_bytes / kernel / 1e6:.1f} GB/s); its Python "
        f"wrappers {linear - kernel:.1f} ms; everything else {total - linear:.1f} ms"
    )


if __name__ == "__main__":
    main()
