"""Bandwidth of the Triton sparse FFN kernels vs a dense cuBLAS FFN, on a CUDA GPU.

At a LLaMA-7B FFN (4096 x 11008, fp16, silu, batch 1) and 0/50/90% sparsity (random sorted
active sets), times dense F.linear x3 (cuBLAS GEMV) and TritonSparseFFN (both launches), and
reports weight bytes read per second: the batch-1 decode roofline. --sweep also tries a few
block sizes per sparsity and prints the best, to retune the defaults for a new GPU.

    .venv/bin/python benchmarks/triton_bandwidth.py [--d 4096] [--n 11008] [--sweep]
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
import typer

SPARSITY = (0.0, 0.5, 0.9)
SWEEP = dict(block_n=(8, 16, 32), block_d=(128, 256, 512), block_k=(16, 32, 64))


def main(d: int = 4096, n: int = 11008, sweep: bool = False) -> None:
    if not torch.cuda.is_available():
        raise SystemExit(
            "triton_bandwidth.py needs a CUDA GPU (torch.cuda.is_available() is False); nothing measured."
        )
    from triton.testing import do_bench

    from thermocline.runtime.kernels.reference import sparse_ffn_reference
    from thermocline.runtime.kernels.triton_sparse import TritonSparseFFN

    dev, dtype = "cuda", torch.float16
    gate, up, down_t = (torch.randn(n, d, device=dev, dtype=dtype) / d**0.5 for _ in range(3))
    down = down_t.t().contiguous()  # nn.Linear(d_ff, d_model) layout of the dense engine
    x, out = torch.randn(d, device=dev), torch.empty(d, device=dev)
    xh = x.to(dtype)[None]

    def dense() -> torch.Tensor:
        return F.linear(F.silu(F.linear(xh, gate)) * F.linear(xh, up), down)

    def bench(fn) -> float:  # seconds; do_bench clears L2 between runs, so weights come from HBM
        return do_bench(fn, warmup=25, rep=200) * 1e-3

    t_dense, dense_bytes = bench(dense), 3 * n * d * dtype.itemsize
    print(f"{torch.cuda.get_device_name()}: FFN {d}x{n} fp16, batch 1\n")
    print(
        "| sparsity | dense us | dense GB/s | triton us | triton GB/s | speedup | blocks (n, d, k) |"
    )
    print("|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for s in SPARSITY:
        k = round(n * (1 - s))
        active = torch.randperm(n, generator=g)[:k].sort().values.to(dev)
        configs = (
            [dict(zip(SWEEP, c, strict=True)) for c in itertools.product(*SWEEP.values())]
            if sweep
            else [{}]
        )
        expected = sparse_ffn_reference(x, gate, up, down_t, active, "silu")
        timed = []
        for cfg in configs:
            ffn = TritonSparseFFN(gate, up, down_t, "silu", **cfg)
            torch.testing.assert_close(
                ffn(x, active), expected, atol=1e-3, rtol=1e-3
            )  # compiled, not interpreted
            timed.append(
                (
                    bench(lambda ffn=ffn, active=active: ffn(x, active, out)),
                    (ffn.block_n or "auto", ffn.block_d, ffn.block_k),
                )
            )
        t, blocks = min(timed, key=lambda tb: tb[0])
        print(
            f"| {s:.0%} | {t_dense * 1e6:.1f} | {dense_bytes / t_dense / 1e9:.0f} | {t * 1e6:.1f} "
            f"| {dense_bytes * k / n / t / 1e9:.0f} | {t_dense / t:.2f}x | {blocks} |",
            flush=True,
        )


if __name__ == "__main__":
    typer.run(main)
