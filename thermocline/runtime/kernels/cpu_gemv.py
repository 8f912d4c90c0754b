"""One token through a dense weight on the CPU: y = W x with W in fp32, fp16 or bf16.

torch's CPU GEMV reads 16-bit weights at fewer bytes per second than fp32 ones
(benchmarks/results/cpu_kernels.md); this kernel widens each weight to fp32 in registers, as
the sparse FFN kernel does. Measured in a SmolLM2 decode (benchmarks/half_weights_decode.py):
1.2-1.4x torch's bf16 path, 1.0-1.1x its fp16 one, at half the bytes of fp32. Threads take
contiguous blocks of output rows: no reduction between them.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from thermocline.runtime.kernels.cpu_sparse import (
    FASTMATH,
    MIN_BYTES_PER_THREAD,
    _pointer,
    _prefetch_row,
    _widen,
    numba_threads,
    weight_view,
)


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def gemv_rows(w, x, y, first, last):
    """y[first:last] = w[first:last] @ x, four rows per pass over x: four independent sums
    and four row streams keep more loads in flight than one, and the rows two passes ahead
    are prefetched. Measured on 120 SmolLM2-sized matrices out of cache, 2 threads: fp32
    12-14 -> 14-17 GB/s, fp16 and bf16 9 -> 10-13 GB/s (BENCHMARKS.md, benchmarks/cpu_gemv.py)."""
    j = first
    while j + 4 <= last:
        if j + 12 <= last:
            for ahead in range(8, 12):
                _prefetch_row(w, j + ahead)
        a0 = a1 = a2 = a3 = np.float32(0.0)
        for i in range(x.size):
            xi = x[i]
            a0 += _widen(w[j, i]) * xi
            a1 += _widen(w[j + 1, i]) * xi
            a2 += _widen(w[j + 2, i]) * xi
            a3 += _widen(w[j + 3, i]) * xi
        y[j], y[j + 1], y[j + 2], y[j + 3] = a0, a1, a2, a3
        j += 4
    for k in range(j, last):
        acc = np.float32(0.0)
        for i in range(x.size):
            acc += _widen(w[k, i]) * x[i]
        y[k] = acc


@njit(cache=True, nogil=True, inline="always")
def row_blocks(n, chunks):
    """Rows per block: a multiple of four (gemv_rows' step), so only the last has a tail."""
    return (n + 4 * chunks - 1) // (4 * chunks) * 4


@njit(parallel=True, fastmath=FASTMATH, cache=True, nogil=True)
def gemv(w, x, y, threads):
    """y = w @ x in blocks of rows, one per thread; fewer for small weights."""
    n = w.shape[0]
    chunks = max(1, min(threads, w.nbytes // MIN_BYTES_PER_THREAD))
    if chunks == 1:  # skip the parallel region's launch
        gemv_rows(w, x, y, 0, n)
        return
    per = row_blocks(n, chunks)
    for c in prange(chunks):
        gemv_rows(w, x, y, c * per, min(n, (c + 1) * per))


@njit(cache=True, nogil=True)
def gemv_kernel(w, x, out, threads):
    """out = w @ x; x, out: addresses of fp32 [d_in] and [d_out] (tensor.data_ptr() is much
    cheaper than tensor.numpy())."""
    n, d = w.shape
    xs = numba.carray(_pointer(x, numba.float32), (d,))
    ys = numba.carray(_pointer(out, numba.float32), (n,))
    gemv(w, xs, ys, threads)


class CpuGemv:
    """A weight [d_out, d_in] viewed once (no copy); call with one token's fp32 x [d_in]."""

    def __init__(self, weight: Tensor):
        self.weight = weight_view(weight)
        self.d_out, self.d_in = self.weight.shape
        self.threads = numba_threads()

    def __call__(self, x: Tensor) -> Tensor:
        # The kernel reads a raw address: anything but a contiguous CPU fp32 x would be garbage.
        if not (x.dtype is torch.float32 and x.is_cpu and x.numel() == self.d_in):
            raise ValueError(f"CpuGemv takes one CPU fp32 vector of {self.d_in}")
        x = x.contiguous()
        out = torch.empty(self.d_out, dtype=torch.float32)
        gemv_kernel(self.weight, x.data_ptr(), out.data_ptr(), self.threads)
        return out
