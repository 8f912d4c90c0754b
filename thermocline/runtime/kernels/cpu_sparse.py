"""Neuron-sparse FFN on the CPU: one fused numba kernel per layer for the cold neurons.

Each thread takes a contiguous chunk of the active list; per neuron it reads the gate and up
rows (one pass over x), applies the activation and threshold, and adds h * down_t[j] into its
own partial output, so the down projection is a row gather with no atomics; the partials are
summed at the end. Weights stay where they are (memory-mapped), read in fp32, fp16 or bf16
and widened to fp32 in registers; accumulation is fp32.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from thermocline.runtime.kernels import ACTIVATIONS
from thermocline.runtime.kernels.reference import check_activation

RELU, FATRELU, DRELU, SILU, GELU, GELU_TANH = range(len(ACTIVATIONS))
# Below this many active neurons per thread, waking the second thread costs more than it saves.
MIN_NEURONS_PER_THREAD = 8
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


@njit(parallel=True, fastmath=FASTMATH, cache=True, nogil=True)
def sparse_ffn_kernel(x, gate, up, down_t, bias, active, act, t, tau, threads, partial, out):
    """out[b] = sum_{j in active} h_j(x[b]) * down_t[j] for x, out [B, d]; overwrites out.

    gate.shape[0] == 0 means non-gated, bias.size == 0 no bias. partial is scratch
    [>= threads, >= B, d]. threads = numba.get_num_threads(), passed in because calling it in
    here stops numba from caching the compiled kernel.
    """
    nb, d = x.shape
    n_act, gated, has_bias = active.size, gate.shape[0] > 0, bias.size > 0
    chunks = max(1, min(threads, n_act // MIN_NEURONS_PER_THREAD))
    per = (n_act + chunks - 1) // chunks
    for c in prange(chunks):
        acc = partial[c]
        acc[:nb] = 0.0
        for k in range(c * per, min(n_act, (c + 1) * per)):
            j = active[k]
            for b in range(nb):
                xb = x[b]
                z = np.float32(0.0)
                if gated:
                    g = np.float32(0.0)
                    for i in range(d):  # gate and up in one pass over x
                        g += _widen(gate[j, i]) * xb[i]
                        z += _widen(up[j, i]) * xb[i]
                    h = _activate(act, float(g), tau)
                    h *= max(z, 0.0) if act == DRELU else z
                else:
                    for i in range(d):
                        z += _widen(up[j, i]) * xb[i]
                    h = _activate(act, float(z) + (bias[j] if has_bias else 0.0), tau)
                if abs(h) <= t:  # t = 0: skip exact zeros (ReLU), saving the down row's bytes
                    continue
                hf, ab = np.float32(h), acc[b]
                for i in range(d):
                    ab[i] += hf * _widen(down_t[j, i])
    out[:] = partial[0, :nb]
    for c in range(1, chunks):
        out += partial[c, :nb]


def weight_view(w: torch.Tensor) -> np.ndarray:
    """A zero-copy numpy view the kernel reads: fp32 as is, fp16/bf16 as their 16-bit patterns."""
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

    Call with x fp32 [d] or [B, d] and the sorted active neuron ids (int32 or int64, indices
    into these rows). Returns fp32 y of x's shape, written into `out` when given (overwritten,
    like torch's out=, not accumulated). For B > 1 the active list is the union over the
    tokens: every token gets its exact h_j for each listed neuron, and each weight row is read
    once for the whole batch. Prefill of long prompts should use the dense path instead.
    """

    def __init__(
        self,
        gate: torch.Tensor | None,
        up: torch.Tensor,
        down_t: torch.Tensor,
        activation: str,
        threshold: float = 0.0,
        fatrelu_threshold: float = 0.0,
        bias: torch.Tensor | None = None,
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
        # Read once: numba.get_num_threads() costs ~1 us a call. Any count up to
        # NUMBA_NUM_THREADS is correct; set_num_threads() after this only changes the speed.
        self.threads = numba.get_num_threads()
        self._partial = np.empty((numba.config.NUMBA_NUM_THREADS, 1, d), np.float32)

    def __call__(
        self, x: torch.Tensor, active: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        xs = x.numpy().reshape(-1, self.d)
        if xs.shape[0] > self._partial.shape[1]:
            self._partial = np.empty((self._partial.shape[0], xs.shape[0], self.d), np.float32)
        if out is None:
            out = torch.empty(x.shape, dtype=torch.float32)
        idx = active.numpy()
        if idx.dtype != np.int64:  # one index type: each compiled variant costs seconds cold
            idx = idx.astype(np.int64)
        sparse_ffn_kernel(
            xs, self.gate, self.up, self.down_t, self.bias, idx, self.act, self.t, self.tau,
            self.threads, self._partial, out.numpy().reshape(-1, self.d),
        )  # fmt: skip
        return out
