"""Which CPU kernel computes the cold neurons: numba vs torch index_select vs dense F.linear.

For each FFN shape and weight dtype, a stack of layers (SmolLM2: its real 30; bigger shapes:
enough layers for >= 1 GiB of FFN weights, so that the stack does not sit in the LLC) is run
start to end, as a decode step would, at 0/50/90% sparsity (random sorted active sets, silu
without threshold: every active neuron's down row is read). Methods run interleaved, rep by
rep; the best pass is reported per layer, with the speedup over the dense FFN in the same
dtype and the weight bytes read per second. Then the per-call overhead at the SmolLM2 shape.

    .venv/bin/python benchmarks/cpu_sparse_ffn.py [--threads 2] [--reps 15]
"""

from __future__ import annotations

import time

import numba
import torch
import torch.nn.functional as F
import typer

from thermocline.runtime.kernels.cpu_sparse import CpuSparseFFN, sparse_ffn_kernel

SHAPES = {
    "SmolLM2-135M": (576, 1536, 30),
    "TinyLlama-1.1B": (2048, 5632, 22),
    "LLaMA-7B": (4096, 11008, 32),
}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SPARSITY = (0.0, 0.5, 0.9)
STACK_BYTES = 1 << 30
# wall: perf_counter. cpu: this thread's CPU time, which a busy shared machine does not
# inflate by descheduling us; it only counts the calling thread, so use it with --threads 1.
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def make_stack(d: int, n: int, layers: int, dtype: torch.dtype) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    stack = []
    for _ in range(layers):
        gate, up, down_t = (torch.randn(n, d, generator=g).div_(d**0.5).to(dtype) for _ in range(3))
        down = down_t.t().contiguous()  # the dense engine's layout: nn.Linear(d_ff, d_model)
        stack.append(
            dict(
                gate=gate,
                up=up,
                down_t=down_t,
                down=down,
                numba=CpuSparseFFN(gate, up, down_t, "silu"),
            )
        )
    return stack


def dense(stack: list[dict], x: torch.Tensor) -> None:
    for w in stack:
        F.linear(F.silu(F.linear(x, w["gate"])) * F.linear(x, w["up"]), w["down"])


def gathered(stack: list[dict], x: torch.Tensor, active: list[torch.Tensor]) -> None:
    for w, idx in zip(stack, active, strict=True):
        h = F.silu(F.linear(x, w["gate"].index_select(0, idx))) * F.linear(
            x, w["up"].index_select(0, idx)
        )
        h @ w["down_t"].index_select(0, idx)


def sparse(
    stack: list[dict], x: torch.Tensor, active: list[torch.Tensor], out: torch.Tensor
) -> None:
    for w, idx in zip(stack, active, strict=True):
        w["numba"](x, idx, out)


def best_passes(fns: dict, reps: int, clock) -> dict[str, float]:
    """Seconds per pass of each fn, best of reps (noise only adds time); fns interleave."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t = clock()
            fn()
            times[name].append(clock() - t)
    return {name: min(ts) for name, ts in times.items()}


def speed_rows(shape: str, dt: str, reps: int, clock, dense_fp32: dict[str, float]) -> None:
    """Table rows of one shape and dtype; dense_fp32 keeps the fp32 dense time per shape,
    the fastest dense FFN on CPUs whose torch lacks fast 16-bit GEMV."""
    d, n, real_layers = SHAPES[shape]
    dtype = DTYPES[dt]
    layer_bytes = 3 * n * d * dtype.itemsize
    layers = (
        real_layers if shape == "SmolLM2-135M" else min(real_layers, -(-STACK_BYTES // layer_bytes))
    )
    stack = make_stack(d, n, layers, dtype)
    x, out = torch.randn(1, d), torch.empty(1, d)
    xd = x.to(dtype)  # the dense engine runs in the weights' dtype
    g = torch.Generator().manual_seed(1)
    for s in SPARSITY:
        k = round(n * (1 - s))
        active = [torch.randperm(n, generator=g)[:k].sort().values for _ in range(layers)]
        fns = {
            "dense": lambda: dense(stack, xd),
            "numba": lambda active=active: sparse(stack, x, active, out),
            "index_select": lambda active=active: gathered(stack, xd, active),
        }
        us = {m: t / layers * 1e6 for m, t in best_passes(fns, reps, clock).items()}
        if dt == "fp32":
            dense_fp32[shape] = min(us["dense"], dense_fp32.get(shape, us["dense"]))
        vs_fp32 = f"{dense_fp32[shape] / us['numba']:.2f}x" if shape in dense_fp32 else "-"
        gbs = {
            m: b / (us[m] * 1e3)
            for m, b in (("dense", layer_bytes), ("numba", layer_bytes * k / n))
        }
        print(
            f"| {shape} {d}x{n} ({layers}) | {dt} | {s:.0%} | {us['dense']:.0f} | {gbs['dense']:.1f} "
            f"| {us['numba']:.0f} | {gbs['numba']:.1f} | {us['dense'] / us['numba']:.2f}x | {vs_fp32} "
            f"| {us['dense'] / us['index_select']:.2f}x |",
            flush=True,
        )


def overhead_table(reps: int, clock) -> None:
    """Per-call cost with nothing to compute, SmolLM2 shape: what 30 layers pay per token."""
    d, n, layers = SHAPES["SmolLM2-135M"]
    ffn = make_stack(d, n, 1, torch.bfloat16)[0]["numba"]
    x, out, none, one = (
        torch.randn(d),
        torch.empty(d),
        torch.zeros(0, dtype=torch.int64),
        torch.zeros(1, dtype=torch.int64),
    )
    weights = (ffn.gate, ffn.up, ffn.down_t, ffn.bias, ffn.act, ffn.t, ffn.tau)
    calls = {
        "sparse_ffn_kernel(...) (dispatch only)": lambda: sparse_ffn_kernel(
            x.data_ptr(), none.data_ptr(), out.data_ptr(), 1, 0, *weights, 1, ffn._partial
        ),
        "CpuSparseFFN(x, [], out)": lambda: ffn(x, none, out),
        "CpuSparseFFN(x, [j], out): one neuron": lambda: ffn(x, one, out),
        "CpuSparseFFN(x, []): allocates out": lambda: ffn(x, none),
    }
    print(f"\n| {d}x{n} bf16 | us per call | us per token ({layers} layers) |\n|---|---|---|")
    for name, fn in calls.items():
        best = best_passes({name: lambda fn=fn: [fn() for _ in range(1000)]}, reps, clock)[name]
        print(f"| {name} | {best * 1e3:.2f} | {best * layers * 1e3:.0f} |")


def interleaved_table(reps: int, clock) -> None:
    """SmolLM2 layers with attention-sized torch GEMVs between the FFNs, as in decode: torch
    and numba each bring an OpenMP pool (two libgomp copies), so the FFN's threads may wait
    for torch's spinning ones to yield the cores. Compare with the FFN-only rows above."""
    d, n, layers = SHAPES["SmolLM2-135M"]
    stack = make_stack(d, n, layers, torch.float32)
    attn = [(torch.randn(d + 2 * 192, d), torch.randn(d, d)) for _ in range(layers)]  # wqkv, wo
    x, out = torch.randn(1, d), torch.empty(1, d)

    def step(ffn) -> None:
        for i, (wqkv, wo) in enumerate(attn):
            F.linear(F.linear(x, wqkv)[:, :d], wo)
            ffn(i)

    g = torch.Generator().manual_seed(2)
    active = {
        s: [
            torch.randperm(n, generator=g)[: round(n * (1 - s))].sort().values
            for _ in range(layers)
        ]
        for s in SPARSITY
    }
    fns = {
        "attention only": lambda: step(lambda i: None),
        "attention + dense FFN": lambda: step(lambda i: dense(stack[i : i + 1], x)),
    }
    for s in SPARSITY:
        fns[f"attention + numba FFN {s:.0%}"] = lambda s=s: step(
            lambda i: stack[i]["numba"](x, active[s][i], out)
        )
    print(f"\n| fp32 {d}x{n}, {layers} layers with attention GEMVs | us per token |\n|---|---|")
    for name, t in best_passes(fns, reps, clock).items():
        print(f"| {name} | {t * 1e6:.0f} |")


def main(
    threads: int = 2,
    reps: int = 15,
    clock: str = "wall",
    shapes: str = ",".join(SHAPES),
    dtypes: str = ",".join(DTYPES),
) -> None:
    torch.set_num_threads(threads)
    numba.set_num_threads(threads)
    print(
        f"threads {threads} (torch and numba), clock {clock}, best of {reps}, torch {torch.__version__}\n"
    )
    print(
        "| shape (layers) | dtype | sparsity | dense us/layer | dense GB/s | numba us/layer | numba GB/s "
        "| numba speedup | numba vs dense fp32 | index_select speedup |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    dense_fp32: dict[str, float] = {}
    for shape in shapes.split(","):
        for dt in dtypes.split(","):
            speed_rows(shape, dt, reps, CLOCKS[clock], dense_fp32)
    overhead_table(reps, CLOCKS[clock])
    interleaved_table(reps, CLOCKS[clock])
    print(f"\nnumba threading layer: {numba.threading_layer()}")


if __name__ == "__main__":
    typer.run(main)
