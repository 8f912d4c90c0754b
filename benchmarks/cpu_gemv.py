"""The one-token GEMV kernel (runtime/kernels/cpu_gemv.py) against torch.mv, out of cache.

    .venv/bin/python benchmarks/cpu_gemv.py [--matrices 120] [--shape 1536,576]

Cycles through enough SmolLM2-sized weight matrices (default 120 of 1536x576: 405 MB in
fp32) that they come from DRAM, as in a decode step, for each weight dtype, with numba's
and torch's threads = cores. torch.mv runs the fp32 matrices only (its 16-bit GEMV is
slower per byte, benchmarks/results/cpu_kernels.md). Prints GB/s of weights read.
"""

from __future__ import annotations

import argparse
import time

import torch

from thermocline.runtime.kernels.cpu_gemv import CpuGemv


def gb_per_s(run, nbytes: int, reps: int = 10) -> float:
    run()  # warm-up (and numba's compile)
    start = time.perf_counter()
    for _ in range(reps):
        run()
    return nbytes * reps / (time.perf_counter() - start) / 1e9


def bench_dtype(dtype: torch.dtype, shape: tuple[int, int], count: int) -> None:
    weights = [torch.randn(shape).to(dtype) for _ in range(count)]
    x, nbytes = torch.randn(shape[1]), sum(w.nbytes for w in weights)
    gemvs = [CpuGemv(w) for w in weights]
    rate = gb_per_s(lambda: [gemv(x) for gemv in gemvs], nbytes)
    print(f"| thermocline CpuGemv | {str(dtype)[6:]} | {rate:.1f} |")
    if dtype == torch.float32:
        rate = gb_per_s(lambda: [torch.mv(w, x) for w in weights], nbytes)
        print(f"| torch.mv | float32 | {rate:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--matrices", type=int, default=120)
    parser.add_argument("--shape", default="1536,576")
    args = parser.parse_args()
    rows, cols = (int(n) for n in args.shape.split(","))
    print(f"{args.matrices} matrices of {rows}x{cols}, {torch.get_num_threads()} threads")
    print("| kernel | weights | GB/s |\n|---|---|---:|")
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        bench_dtype(dtype, (rows, cols), args.matrices)


if __name__ == "__main__":
    main()
