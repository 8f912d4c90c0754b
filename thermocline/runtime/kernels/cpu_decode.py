"""Every block of a LLaMA-family model for one token, in one numba call.

A batch-1 decode step of a small model on a CPU is bound by per-op overhead as much as by
weight bytes: SmolLM2 in eager torch spends ~10 ms of a ~38 ms token in ~25 small ops per
layer (norms, RoPE, cache writes, attention, residuals) around the GEMVs, and torch.compile
on the CPU made it slower (BENCHMARKS.md, "Why a fused step"). Here one call runs all
layers; per layer five parallel regions (q/k/v, attention, output, gate/up, down) at a few
microseconds each to start, the rest serial on vectors of d_model.

Weights, norms and biases are read in place through a table of their addresses (a row per
layer); weights in fp32, fp16 or bf16, widened to fp32 in registers; everything else fp32.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from thermocline.runtime.kernels.cpu_gemv import gemv_rows, row_blocks
from thermocline.runtime.kernels.cpu_sparse import DRELU, FASTMATH, _activate, _pointer


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _rms_norm(x, weight, eps, out):
    ss = np.float32(0.0)
    for i in range(x.size):
        ss += x[i] * x[i]
    scale = np.float32(1.0 / math.sqrt(ss / x.size + eps))
    for i in range(x.size):
        out[i] = x[i] * scale * weight[i]


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _rope(v, cos, sin):
    """Rotate-half RoPE of one head in place: v * cos + cat(-v2, v1) * sin."""
    half = v.size // 2
    for i in range(half):
        a, b = v[i], v[i + half]
        v[i] = a * cos[i] - b * sin[i]
        v[i + half] = b * cos[i + half] + a * sin[i + half]


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _add_bias(y, address, first):
    """y += bias[first : first + y.size] of the fp32 bias at address; 0 means no bias."""
    if address != 0:
        y += numba.carray(_pointer(address + 4 * first, numba.float32), y.shape)


@njit(parallel=True, fastmath=FASTMATH, cache=True, nogil=True)
def decode_blocks_kernel(
    x, pos, dims, tensors, wdtype, eps, cos, sin, cache_k, cache_v, cache_len, ffn, threads
):
    """x [d_model] fp32, the residual stream of the token at `pos`, updated in place.

    dims: (layers, heads, kv_heads, head_dim, d_ff). tensors: int64 [layers, 11] addresses,
    read in place: wqkv, wo, gate, up, down (row-major [out, in], dtype of the empty array
    wdtype), the attention and FFN norm weights, then the qkv, o, up and down biases (fp32;
    0: none). cos, sin: fp32 [head_dim] at pos. cache_k/v: addresses of fp32
    [layers, kv_heads, cache_len, head_dim]. ffn: fp32 [layers, 3]: activation code,
    magnitude threshold, fatrelu threshold. threads: numba's thread count.
    """
    n_layers, heads, kv_heads, head_dim, d_ff = dims[0], dims[1], dims[2], dims[3], dims[4]
    d = x.size
    q_size, kv_size = heads * head_dim, kv_heads * head_dim
    n_qkv = q_size + 2 * kv_size
    cache_shape = (n_layers, kv_heads, cache_len, head_dim)
    keys = numba.carray(_pointer(cache_k, numba.float32), cache_shape)
    values = numba.carray(_pointer(cache_v, numba.float32), cache_shape)
    h = np.empty(d, np.float32)
    qkv = np.empty(n_qkv, np.float32)
    att = np.empty(q_size, np.float32)
    out = np.empty(d, np.float32)
    gate = np.empty(d_ff, np.float32)
    up = np.empty(d_ff, np.float32)
    scores = np.empty((heads, pos + 1), np.float32)
    scale = np.float32(1.0 / math.sqrt(head_dim))
    group = heads // kv_heads
    for layer in range(n_layers):
        at = tensors[layer]
        w_qkv = numba.carray(_pointer(at[0], wdtype.dtype), (n_qkv, d))
        w_o = numba.carray(_pointer(at[1], wdtype.dtype), (d, q_size))
        w_gate = numba.carray(_pointer(at[2], wdtype.dtype), (d_ff, d))
        w_up = numba.carray(_pointer(at[3], wdtype.dtype), (d_ff, d))
        w_down = numba.carray(_pointer(at[4], wdtype.dtype), (d, d_ff))
        attn_norm = numba.carray(_pointer(at[5], numba.float32), (d,))
        ffn_norm = numba.carray(_pointer(at[6], numba.float32), (d,))

        _rms_norm(x, attn_norm, eps, h)
        per = row_blocks(n_qkv, threads)
        for c in prange(threads):
            gemv_rows(w_qkv, h, qkv, c * per, min(n_qkv, (c + 1) * per))
        _add_bias(qkv, at[7], 0)
        for head in range(heads + kv_heads):  # q and k heads are adjacent: one pass
            _rope(qkv[head * head_dim : (head + 1) * head_dim], cos, sin)
        for g in range(kv_heads):
            k_at, v_at = q_size + g * head_dim, q_size + kv_size + g * head_dim
            keys[layer, g, pos] = qkv[k_at : k_at + head_dim]
            values[layer, g, pos] = qkv[v_at : v_at + head_dim]

        for head in prange(heads):
            q = qkv[head * head_dim : (head + 1) * head_dim]
            k, v, s = keys[layer, head // group], values[layer, head // group], scores[head]
            top = np.float32(-np.inf)
            for t in range(pos + 1):
                dot = np.float32(0.0)
                for i in range(head_dim):
                    dot += q[i] * k[t, i]
                s[t] = dot * scale
                top = max(top, s[t])
            total = np.float32(0.0)
            for t in range(pos + 1):
                s[t] = math.exp(s[t] - top)
                total += s[t]
            y = att[head * head_dim : (head + 1) * head_dim]
            y[:] = 0.0
            for t in range(pos + 1):
                p = s[t] / total
                for i in range(head_dim):
                    y[i] += p * v[t, i]

        per = row_blocks(d, threads)
        for c in prange(threads):
            gemv_rows(w_o, att, out, c * per, min(d, (c + 1) * per))
        _add_bias(out, at[8], 0)
        x += out

        _rms_norm(x, ffn_norm, eps, h)
        act, cut, tau = int(ffn[layer, 0]), ffn[layer, 1], ffn[layer, 2]
        per = row_blocks(d_ff, threads)
        for c in prange(threads):
            first, last = c * per, min(d_ff, (c + 1) * per)
            gemv_rows(w_gate, h, gate, first, last)
            gemv_rows(w_up, h, up, first, last)
            _add_bias(up[first:last], at[9], first)
            for j in range(first, last):
                z = up[j]
                a = _activate(act, float(gate[j]), tau) * (max(z, 0.0) if act == DRELU else z)
                gate[j] = a if abs(a) > cut else 0.0  # cut = 0 keeps the model exact
        per = row_blocks(d, threads)
        for c in prange(threads):
            gemv_rows(w_down, gate, out, c * per, min(d, (c + 1) * per))
        _add_bias(out, at[10], 0)
        x += out
