"""Neuron-sparse FFN on the GPU: Triton gather kernels over the active hot neurons.

Two launches per layer and token batch:
  1. `_gate_up_kernel`: each program gathers BLOCK_N active rows of gate/up (or fc1), dots
     them with x in fp32, applies the activation and threshold and writes h [B, n_active].
     Program 0 also zeroes y, so the second launch can accumulate into it without a memset.
  2. `_down_kernel`: y[b] += sum_k h[b, k] * down_t[active[k]]. The grid is (column blocks of
     d) x (slices of the active list) x B; slices meet in y through fp32 atomic adds.
     Atomics rather than a two-stage reduction: the column blocks alone (16 at d=4096) cannot
     fill an H100's 132 SMs, split-K can; the partials then cost splits * d atomics (~120k at
     LLaMA-7B, 50% active: noise next to the 135 MB of weights read) instead of a scratch
     buffer and a third launch. The price is run-to-run rounding noise in the last bits.
     Rows whose h is 0 (ReLU false positives, thresholded neurons) are masked out of the load,
     so their bytes are never read.
Both accumulate in fp32 whatever the weights' dtype (fp32, fp16, bf16).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from thermocline.runtime.kernels import ACTIVATIONS
from thermocline.runtime.kernels.reference import check_activation

# constexpr so that the jitted code may read them as globals; codes index ACTIVATIONS
RELU, FATRELU, DRELU, SILU, GELU, GELU_TANH = (tl.constexpr(i) for i in range(len(ACTIVATIONS)))


@triton.jit
def _activate(z, ACT: tl.constexpr, tau):
    if ACT == RELU or ACT == DRELU:  # noqa: SIM109 (no `in` in Triton)
        return tl.maximum(z, 0.0)
    elif ACT == FATRELU:
        return tl.where(z > tau, z, 0.0)
    elif ACT == SILU:
        return z * tl.sigmoid(z)
    elif ACT == GELU:
        return 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))
    else:  # tanh(u) = 2 sigmoid(2u) - 1: tl has no portable tanh
        u = 0.7978845608028654 * (z + 0.044715 * z * z * z)
        return z * tl.sigmoid(2.0 * u)


@triton.jit
def _gate_up_kernel(
    x_ptr, gate_ptr, up_ptr, bias_ptr, active_ptr, h_ptr, y_ptr, n_active, d, t, tau,
    ACT: tl.constexpr, GATED: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid, b = tl.program_id(0), tl.program_id(1)
    if pid == 0:  # y is accumulated by the down kernel's atomics
        for off in range(0, d, BLOCK_D):
            cols = off + tl.arange(0, BLOCK_D)
            tl.store(y_ptr + b * d + cols, tl.zeros((BLOCK_D,), tl.float32), mask=cols < d)
    ks = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    kmask = ks < n_active
    rows = tl.load(active_ptr + ks, mask=kmask, other=0).to(tl.int64)
    acc_u = tl.zeros((BLOCK_N,), tl.float32)
    acc_g = tl.zeros((BLOCK_N,), tl.float32)
    for off in range(0, d, BLOCK_D):
        cols = off + tl.arange(0, BLOCK_D)
        xv = tl.load(x_ptr + b * d + cols, mask=cols < d, other=0.0)[None, :]
        offs = rows[:, None] * d + cols[None, :]
        m = kmask[:, None] & (cols < d)[None, :]
        acc_u += tl.sum(tl.load(up_ptr + offs, mask=m, other=0.0).to(tl.float32) * xv, axis=1)
        if GATED:
            acc_g += tl.sum(tl.load(gate_ptr + offs, mask=m, other=0.0).to(tl.float32) * xv, axis=1)
    if HAS_BIAS:
        acc_u += tl.load(bias_ptr + rows, mask=kmask, other=0.0).to(tl.float32)
    if GATED:
        h = _activate(acc_g, ACT, tau)
        h = h * (tl.maximum(acc_u, 0.0) if ACT == DRELU else acc_u)
    else:
        h = _activate(acc_u, ACT, tau)
    h = tl.where(tl.abs(h) > t, h, 0.0)  # t = 0 keeps every non-zero h
    tl.store(h_ptr + b * n_active + ks, h, mask=kmask)


@triton.jit
def _down_kernel(
    h_ptr, down_ptr, active_ptr, y_ptr, n_active, d, k_per_split,
    BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid_d, pid_k, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < d
    acc = tl.zeros((BLOCK_D,), tl.float32)
    k_end = tl.minimum(n_active, (pid_k + 1) * k_per_split)
    for k0 in range(pid_k * k_per_split, k_end, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kmask = ks < k_end
        h = tl.load(h_ptr + b * n_active + ks, mask=kmask, other=0.0)
        rows = tl.load(active_ptr + ks, mask=kmask, other=0).to(tl.int64)
        m = (kmask & (h != 0.0))[:, None] & cmask[None, :]
        w = tl.load(down_ptr + rows[:, None] * d + cols[None, :], mask=m, other=0.0)
        acc += tl.sum(w.to(tl.float32) * h[:, None], axis=0)
    tl.atomic_add(y_ptr + b * d + cols, acc, mask=cmask)


class TritonSparseFFN:
    """One layer's hot neurons on the GPU; same call shape as CpuSparseFFN.

    x fp32 [d] or [B, d] on the weights' device, active int32/int64 ids into these rows.
    Returns fp32 y of x's shape, overwriting `out` when given. Two launches and no host sync:
    n_active is read from active's shape. The grids depend on n_active, so one CUDA graph
    cannot replay steps with different active counts. block_n=None picks rows per program so
    that even 90% sparsity gives every SM several programs; the block sizes are untuned
    guesses until benchmarks/triton_bandwidth.py --sweep has run on a GPU.
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
        block_n: int | None = None,
        block_d: int = 256,
        block_k: int = 32,
    ) -> None:
        check_activation(activation, gate is not None)
        n, d = up.shape
        assert down_t.shape == (n, d) and (gate is None or gate.shape == (n, d))
        self.d, self.n = d, n
        self.up, self.down_t = up.contiguous(), down_t.contiguous()
        self.gate = None if gate is None else gate.contiguous()
        self.bias = None if bias is None else bias.float().contiguous()
        self.act, self.t, self.tau = (
            ACTIVATIONS.index(activation),
            float(threshold),
            float(fatrelu_threshold),
        )
        self.block_n, self.block_d, self.block_k = block_n, block_d, block_k
        self._h = torch.empty(max(n, 1), dtype=torch.float32, device=up.device)
        sms = torch.cuda.get_device_properties(up.device).multi_processor_count if up.is_cuda else 1
        self._programs = 4 * sms  # a few waves per SM to hide the gathers' latency

    def __call__(
        self, x: torch.Tensor, active: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        d, n_active = self.d, active.numel()
        nb = x.numel() // d
        if out is None:
            out = torch.empty_like(x, dtype=torch.float32)
        if nb * n_active > self._h.numel():
            self._h = torch.empty(nb * n_active, dtype=torch.float32, device=x.device)
        block_n = self.block_n or next(
            b for b in (16, 8, 4) if b == 4 or n_active * nb >= b * self._programs
        )
        _gate_up_kernel[(max(1, triton.cdiv(n_active, block_n)), nb)](
            x, self.up if self.gate is None else self.gate, self.up, self.up if self.bias is None else self.bias,
            active, self._h, out, n_active, d, self.t, self.tau,
            ACT=self.act, GATED=self.gate is not None, HAS_BIAS=self.bias is not None,
            BLOCK_N=block_n, BLOCK_D=self.block_d,
        )  # fmt: skip
        if n_active == 0:
            return out
        # Split the active list so that column blocks x splits x batch fill the GPU.
        col_blocks = triton.cdiv(d, self.block_d)
        split = max(
            1,
            min(triton.cdiv(self._programs, col_blocks * nb), triton.cdiv(n_active, self.block_k)),
        )
        k_per_split = triton.cdiv(triton.cdiv(n_active, split), self.block_k) * self.block_k
        _down_kernel[(col_blocks, triton.cdiv(n_active, k_per_split), nb)](
            self._h,
            self.down_t,
            active,
            out,
            n_active,
            d,
            k_per_split,
            BLOCK_K=self.block_k,
            BLOCK_D=self.block_d,
        )
        return out
