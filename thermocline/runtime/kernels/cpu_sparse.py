"""Neuron-sparse FFN on the CPU: one fused numba kernel per layer for the cold neurons.

Each thread takes a contiguous chunk of the active list; per neuron it reads the gate and up
rows (one pass over x) and applies the activation and threshold, then adds h * down_t[j] of
the neurons the threshold kept into its own partial output, so the down projection is a row
gather with no atomics; the partials are summed at the end. Weights stay where they are
(memory-mapped), read in fp32, fp16 or bf16 and widened to fp32 in registers; accumulation
is fp32. Why numba and these choices, with
the measurements: benchmarks/results/cpu_kernels.md.

int8 would be one more case in _widen (sitofp) plus per-row scales: the gate/up dot products
times their row's scale, the down row's scale folded into h.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic
from torch import Tensor

from thermocline.runtime.kernels import ACTIVATIONS
from thermocline.runtime.kernels.reference import check_activation

RELU, FATRELU, DRELU, SILU, GELU, GELU_TANH = range(len(ACTIVATIONS))
# Below this many weight bytes per thread, starting the parallel region (2-10 us, more on a
# busy machine) costs more than splitting the work saves.
MIN_BYTES_PER_THREAD = 128 << 10
# Software prefetch of the first bytes of each row of the neuron this many ahead: the active
# rows are scattered, and short rows end before the hardware streamer has ramped up
# (SmolLM2 bf16 rows are 1152 B). Measured: 25-40% faster there at 50-90% sparsity; whole-row
# prefetch hurts 16 KB rows (LLaMA-7B fp32), where the streamer does the job once started.
PREFETCH_AHEAD, PREFETCH_BYTES = 2, 1024
# Reassociation lets LLVM vectorize the dot products; no "ninf"/"nnan": exp() may overflow.
FASTMATH = {"reassoc", "contract", "nsz"}


@intrinsic
def _widen(typingctx, v):
    """A stored weight -> float32: float32 as is, int16 = fp16 bits, uint16 = bf16 bits."""
    f32 = ir.FloatType()
    if v == types.float32:
        return types.float32(v), lambda ctx, b, sig, args: args[0]
    if v == types.int16:  # numba has no float16 arrays on the CPU: fpext vectorizes to vcvtph2ps
        return types.float32(v), lambda ctx, b, sig, args: b.fpext(
            b.bitcast(args[0], ir.HalfType()), f32
        )
    if v == types.uint16:  # bf16 is the top half of an fp32
        i32 = ir.IntType(32)
        return types.float32(v), lambda ctx, b, sig, args: b.bitcast(
            b.shl(b.zext(args[0], i32), i32(16)), f32
        )
    return None


@intrinsic
def _prefetch_row(typingctx, w, row):
    """Hint the caches to fetch the first PREFETCH_BYTES of w[row]: straight-line prefetches
    from one base pointer (a loop of indexed ones cost ~100 ns per neuron). Prefetches past
    the row's end are harmless: they never fault."""

    def codegen(ctx, builder, sig, args):
        ary = ctx.make_array(sig.args[0])(ctx, builder, args[0])
        zero = ctx.get_constant(types.intp, 0)
        base = cgutils.get_item_pointer(
            ctx, builder, sig.args[0], ary, [args[1], zero], wraparound=False
        )
        i8, i32 = ir.IntType(8), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [base.type, i32, i32, i32])
        prefetch = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        for off in range(0, PREFETCH_BYTES, 64):  # read, keep in all cache levels, data
            builder.call(
                prefetch,
                [builder.gep(base, [ir.IntType(64)(off)], source_etype=i8), i32(0), i32(3), i32(1)],
            )
        return ctx.get_dummy_value()

    return types.void(w, row), codegen


@njit(inline="always")
def _activate(code, z, tau):
    if code in (RELU, DRELU):
        return max(z, 0.0)
    if code == FATRELU:
        return z if z > tau else 0.0
    if code == SILU:
        return z / (1.0 + math.exp(-z))
    if code == GELU:
        return 0.5 * z * (1.0 + math.erf(z * 0.7071067811865476))
    return 0.5 * z * (1.0 + math.tanh(0.7978845608028654 * (z + 0.044715 * z * z * z)))


@njit(fastmath=FASTMATH, cache=True, nogil=True)
def _neurons(x, gate, up, down_t, bias, active, act, t, tau, acc):
    """acc[b] = sum over the given active neurons j of h_j(x[b]) * down_t[j]; returns how
    many down rows it read.

    Two passes: h of every given neuron from its gate and up rows, then the down rows of
    the neurons the threshold kept (|h| > t for some b; t = 0 keeps all but exact zeros), four
    per pass over acc. A SiLU model's threshold drops ~40% of the predicted-active neurons:
    the second pass prefetches exactly the rows it reads, where one pass would prefetch every
    down row. Measured: benchmarks/results/cpu_kernels.md, "Two passes".
    """
    nb, d = x.shape
    gated, has_bias = gate.shape[0] > 0, bias.size > 0
    h = np.empty((active.size, nb), np.float32)
    kept = np.empty(active.size, np.int64)
    n_kept = 0
    for k in range(active.size):
        j = active[k]
        if k + PREFETCH_AHEAD < active.size:
            jn = active[k + PREFETCH_AHEAD]
            _prefetch_row(up, jn)
            if gated:
                _prefetch_row(gate, jn)
        keep = False
        for b in range(nb):
            xb = x[b]
            z = np.float32(0.0)
            if gated:
                g = np.float32(0.0)
                for i in range(d):  # gate and up in one pass over x
                    g += _widen(gate[j, i]) * xb[i]
                    z += _widen(up[j, i]) * xb[i]
                hb = _activate(act, float(g), tau)
                hb *= max(z, 0.0) if act == DRELU else z
            else:
                for i in range(d):
                    z += _widen(up[j, i]) * xb[i]
                hb = _activate(act, float(z) + (bias[j] if has_bias else 0.0), tau)
            if abs(hb) > t:
                keep = True
            else:
                hb = 0.0
            h[n_kept, b] = hb  # overwritten by the next neuron unless this one is kept
        if keep:
            kept[n_kept] = j
            n_kept += 1
    acc[:nb] = 0.0
    quads = n_kept // 4
    for q in range(quads):  # a quarter of acc's loads and stores of one row per pass
        k = 4 * q
        for ahead in range(k + 4 * PREFETCH_AHEAD, min(k + 4 * PREFETCH_AHEAD + 4, n_kept)):
            _prefetch_row(down_t, kept[ahead])
        j0, j1, j2, j3 = kept[k], kept[k + 1], kept[k + 2], kept[k + 3]
        for b in range(nb):
            h0, h1, h2, h3, ab = h[k, b], h[k + 1, b], h[k + 2, b], h[k + 3, b], acc[b]
            for i in range(d):
                ab[i] += (h0 * _widen(down_t[j0, i]) + h1 * _widen(down_t[j1, i])
                          + h2 * _widen(down_t[j2, i]) + h3 * _widen(down_t[j3, i]))  # fmt: skip
    for k in range(4 * quads, n_kept):
        j = kept[k]
        for b in range(nb):
            hf, ab = h[k, b], acc[b]
            for i in range(d):
                ab[i] += hf * _widen(down_t[j, i])
    return n_kept


@intrinsic
def _pointer(typingctx, address, dtype):
    """An int address -> a typed pointer, for numba.carray."""
    ty = types.CPointer(dtype.dtype)
    return ty(address, dtype), lambda ctx, b, sig, args: b.inttoptr(args[0], ctx.get_value_type(ty))


@njit(parallel=True, fastmath=FASTMATH, cache=True, nogil=True)
def sparse_ffn_kernel(
    x, active, out, nb, n_act, gate, up, down_t, bias, act, t, tau, threads, partial
):
    """out[b] = sum_{j in active} h_j(x[b]) * down_t[j]; overwrites out.

    x, out: addresses of fp32 [nb, d]; active: address of int64 [n_act]. Taking addresses
    (tensor.data_ptr()) costs ~0.1 us, tensor.numpy() ~0.9 us each: a third of a SmolLM2
    layer's call overhead. gate.shape[0] == 0 means non-gated, bias.size == 0 no bias.
    partial: scratch [>= threads, >= nb, d]. threads = numba.get_num_threads(), passed in
    because calling it in here stops numba from caching the compiled kernel.
    """
    d = up.shape[1]
    xs = numba.carray(_pointer(x, numba.float32), (nb, d))
    ids = numba.carray(_pointer(active, numba.int64), (n_act,))
    ys = numba.carray(_pointer(out, numba.float32), (nb, d))
    neuron_bytes = (3 if gate.shape[0] > 0 else 2) * d * up.itemsize
    chunks = max(1, min(threads, n_act * neuron_bytes // MIN_BYTES_PER_THREAD))
    if chunks == 1:  # skip the parallel region's launch
        _neurons(xs, gate, up, down_t, bias, ids, act, t, tau, ys)
        return
    per = (n_act + chunks - 1) // chunks
    for c in prange(chunks):
        _neurons(xs, gate, up, down_t, bias, ids[c * per : (c + 1) * per], act, t, tau, partial[c])
    ys[:] = partial[0, :nb]
    for c in range(1, chunks):
        ys += partial[c, :nb]


def numba_threads() -> int:
    """numba's thread count, for a kernel to read once (~1 us a call). The first call in a
    process starts numba's OpenMP layer, which resets the thread count of the OpenMP runtime
    torch shares to NUMBA_NUM_THREADS: torch's own setting is put back."""
    torch_threads = torch.get_num_threads()
    threads = numba.get_num_threads()
    torch.set_num_threads(torch_threads)
    return threads


def weight_view(w: Tensor) -> np.ndarray:
    """A numpy view the kernel reads: fp32 as is, fp16/bf16 as their 16-bit patterns. No copy
    for contiguous weights (memory-mapped ones stay mapped); others are made contiguous."""
    w = w.detach().contiguous()
    if w.dtype == torch.float32:
        return w.numpy()
    if w.dtype == torch.float16:
        return w.view(torch.int16).numpy()
    if w.dtype == torch.bfloat16:
        return w.view(torch.int16).numpy().view(np.uint16)
    raise ValueError(f"CPU sparse FFN reads fp32, fp16 or bf16 weights, not {w.dtype}")


class CpuSparseFFN:
    """One layer's cold neurons: numpy views of its neuron-contiguous weights, made once.

    Call with x fp32 [d] or [B, d] and the active neuron ids, sorted ascending for locality
    (int64; int32 is converted, ~1 us). Ids are not bounds-checked: they must index these
    rows. Returns fp32 y of x's shape, written into `out` when given (overwritten, like
    torch's out=, not accumulated: the caller adds the GPU part, the down bias, the residual).
    For B > 1 pass the union of the tokens' active sets: every token gets its exact h_j for
    each listed neuron and each weight row is read once for the batch. Prefill of long
    prompts should use the dense path. Releases the GIL, so a Python thread driving the GPU
    can run meanwhile; one call at a time per instance, though (shared scratch).
    """

    def __init__(
        self,
        gate: Tensor | None,
        up: Tensor,
        down_t: Tensor,
        activation: str,
        threshold: float = 0.0,
        fatrelu_threshold: float = 0.0,
        bias: Tensor | None = None,
    ) -> None:
        check_activation(activation, gate is not None)
        n, d = up.shape
        assert down_t.shape == (n, d) and (gate is None or gate.shape == (n, d))
        self.d, self.n = d, n
        self.up, self.down_t = weight_view(up), weight_view(down_t)
        self.gate = self.up[:0] if gate is None else weight_view(gate)
        assert self.up.dtype == self.down_t.dtype == self.gate.dtype, "one weight dtype per layer"
        self.bias = (
            np.zeros(0, np.float32) if bias is None else bias.detach().float().contiguous().numpy()
        )
        self.act, self.t, self.tau = (
            ACTIVATIONS.index(activation),
            float(threshold),
            float(fatrelu_threshold),
        )
        # Any count up to NUMBA_NUM_THREADS is correct; set_num_threads() after this only
        # changes the speed.
        self.threads = numba_threads()
        self._partial = np.empty((numba.config.NUMBA_NUM_THREADS, 1, d), np.float32)

    def __call__(self, x: Tensor, active: Tensor, out: Tensor | None = None) -> Tensor:
        if out is None:
            out = torch.empty_like(x)
        if active.dtype is not torch.int64:  # one compiled index type: each costs seconds cold
            active = active.long()
        nb = x.numel() // self.d
        # The kernel reads raw addresses: anything but contiguous CPU fp32 / int64 would be garbage.
        if not (
            x.dtype is out.dtype is torch.float32
            and x.is_cpu and out.is_cpu and active.is_cpu
            and x.is_contiguous() and out.is_contiguous() and active.is_contiguous()
            and nb * self.d == x.numel() == out.numel()
        ):  # fmt: skip
            raise ValueError("CpuSparseFFN takes contiguous CPU fp32 x and out, [d] or [B, d]")
        if nb > self._partial.shape[1]:
            self._partial = np.empty((self._partial.shape[0], nb, self.d), np.float32)
        sparse_ffn_kernel(
            x.data_ptr(), active.data_ptr(), out.data_ptr(), nb, active.numel(), self.gate, self.up,
            self.down_t, self.bias, self.act, self.t, self.tau, self.threads, self._partial,
        )  # fmt: skip
        return out
