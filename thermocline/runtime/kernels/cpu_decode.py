"""Every block of a LLaMA-family model for one token, in one numba call: dense FFNs, or the
artifact's neuron-sparse ones (predictor, then the predicted-active hot and cold neurons).

A batch-1 decode step of a small model on a CPU is bound by per-op overhead as much as by
weight bytes: SmolLM2 in eager torch spends ~10 ms of a ~38 ms token in ~25 small ops per
layer (norms, RoPE, cache writes, attention, residuals) around the GEMVs, and torch.compile
on the CPU made it slower (BENCHMARKS.md, "Why a fused step"). Here one call runs all
layers; per layer five parallel regions (q/k/v, attention, output, gate/up, down; a sparse
FFN has the predictor's two GEMVs and the neurons instead of the last two) at 2-3
microseconds each to start, the rest serial on vectors of d_model.

Weights, norms and biases are read in place through a table of their addresses (a row per
layer, columns below); weights in fp32, fp16 or bf16, widened to fp32 in registers;
predictor weights in fp16 (as an artifact stores them) or fp32; everything else fp32.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from thermocline.runtime.kernels.cpu_gemv import gemv, gemv_rows, row_blocks
from thermocline.runtime.kernels.cpu_sparse import DRELU, FASTMATH, _activate, _neurons, _pointer

# Columns of the per-layer address table. Every layer: attention weights (wdtype), norm
# weights and biases (fp32; 0: none). Dense FFN: gate, up, down [d_model, d_ff] (fdtype).
# Sparse FFN: the hot and cold neuron blocks' gate, up, down_t [n, d_model] (fdtype), the
# hot count, and the predictor's w1 [rank, d_model] and w2 [d_ff, rank] (pdtype; 0: none).
WQKV, WO, ATTN_NORM, FFN_NORM, QKV_BIAS, O_BIAS, UP_BIAS, DOWN_BIAS = range(8)
GATE, UP, DOWN = range(8, 11)
HOT_GATE, COLD_GATE = GATE, GATE + 3  # then up and down_t of the same block
N_HOT, W1, W2, RANK = range(COLD_GATE + 3, COLD_GATE + 7)
COLUMNS = RANK + 1
# Columns of the per-layer float table: the FFN activation's code (ACTIVATIONS), the
# magnitude threshold below which h is zeroed, fatrelu's threshold, and the predictor's
# logit threshold and nonlinearity code.
ACT, CUT, TAU, LOGIT_CUT, PREDICTOR_ACT = range(5)
KNOBS = PREDICTOR_ACT + 1


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


@njit(fastmath=FASTMATH, cache=True, nogil=True, inline="always")
def _matrix(address, dtype, rows, cols):
    return numba.carray(_pointer(address, dtype), (rows, cols))


@njit(parallel=True, fastmath=FASTMATH, cache=True, nogil=True)
def _attention(x, pos, at, wdtype, heads, head_dim, eps, cos, sin, keys, values, threads):
    """x += attention(norm(x)) for one layer; keys/values: its cache [kv_heads, len, head_dim]."""
    d, kv_heads = x.size, keys.shape[0]
    q_size, kv_size = heads * head_dim, kv_heads * head_dim
    n_qkv = q_size + 2 * kv_size
    h, qkv, att = np.empty(d, np.float32), np.empty(n_qkv, np.float32), np.empty(q_size, np.float32)
    _rms_norm(x, numba.carray(_pointer(at[ATTN_NORM], numba.float32), (d,)), eps, h)
    gemv(_matrix(at[WQKV], wdtype.dtype, n_qkv, d), h, qkv, threads)
    _add_bias(qkv, at[QKV_BIAS], 0)
    for head in range(heads + kv_heads):  # q and k heads are adjacent: one pass
        _rope(qkv[head * head_dim : (head + 1) * head_dim], cos, sin)
    for g in range(kv_heads):
        k_at, v_at = q_size + g * head_dim, q_size + kv_size + g * head_dim
        keys[g, pos] = qkv[k_at : k_at + head_dim]
        values[g, pos] = qkv[v_at : v_at + head_dim]
    scores = np.empty((heads, pos + 1), np.float32)
    scale, group = np.float32(1.0 / math.sqrt(head_dim)), heads // kv_heads
    for head in prange(heads):
        q = qkv[head * head_dim : (head + 1) * head_dim]
        k, v, s = keys[head // group], values[head // group], scores[head]
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
    out = np.empty(d, np.float32)
    gemv(_matrix(at[WO], wdtype.dtype, d, q_size), att, out, threads)
    _add_bias(out, at[O_BIAS], 0)
    x += out


@njit(parallel=True, fastmath=FASTMATH, cache=True, nogil=True)
def _dense_ffn(h, out, at, fdtype, d_ff, knobs, threads):
    """out = down(act(gate h) * up h), h zeroed at or below the magnitude threshold."""
    d = h.size
    w_gate = _matrix(at[GATE], fdtype.dtype, d_ff, d)
    w_up = _matrix(at[UP], fdtype.dtype, d_ff, d)
    gate, up = np.empty(d_ff, np.float32), np.empty(d_ff, np.float32)
    act, cut, tau = int(knobs[ACT]), knobs[CUT], knobs[TAU]
    per = row_blocks(d_ff, threads)
    for c in prange(threads):
        first, last = c * per, min(d_ff, (c + 1) * per)
        gemv_rows(w_gate, h, gate, first, last)
        gemv_rows(w_up, h, up, first, last)
        _add_bias(up[first:last], at[UP_BIAS], first)
        for j in range(first, last):
            z = up[j]
            a = _activate(act, float(gate[j]), tau) * (max(z, 0.0) if act == DRELU else z)
            gate[j] = a if abs(a) > cut else 0.0  # cut = 0 keeps the model exact
    gemv(_matrix(at[DOWN], fdtype.dtype, d, d_ff), gate, out, threads)


@njit(parallel=True, fastmath=FASTMATH, cache=True, nogil=True)
def _sparse_ffn(h, out, at, fdtype, pdtype, d_ff, knobs, threads):
    """out = the FFN over the predicted-active neurons (all of them without a predictor), as
    SparseFeedForward computes one token on the CPU; returns how many were computed and how
    many down rows were read (those of the neurons the threshold kept)."""
    d, n_hot = h.size, at[N_HOT]
    ids = np.empty(d_ff, np.int64)
    n_act = 0
    if at[W1] != 0:
        rank = at[RANK]
        hidden, logits = np.empty(rank, np.float32), np.empty(d_ff, np.float32)
        gemv(_matrix(at[W1], pdtype.dtype, rank, d), h, hidden, threads)
        for r in range(rank):
            hidden[r] = _activate(int(knobs[PREDICTOR_ACT]), float(hidden[r]), 0.0)
        gemv(_matrix(at[W2], pdtype.dtype, d_ff, rank), hidden, logits, threads)
        for j in range(d_ff):
            if logits[j] > knobs[LOGIT_CUT]:
                ids[n_act] = j
                n_act += 1
    else:
        ids[:] = np.arange(d_ff)
        n_act = d_ff
    split = np.searchsorted(ids[:n_act], n_hot)  # ids ascend: the hot ones come first
    hot_ids, cold_ids = ids[:split], ids[split:n_act] - n_hot
    no_bias = np.zeros(0, np.float32)
    act, cut, tau = int(knobs[ACT]), knobs[CUT], knobs[TAU]
    partial = np.empty((threads, 2, d), np.float32)
    down_rows = np.zeros((threads, 2), np.int64)
    for c in prange(threads):  # each thread: its share of the hot ids, then of the cold ones
        for side in range(2):
            first, n, side_ids = (
                (HOT_GATE, n_hot, hot_ids) if side == 0 else (COLD_GATE, d_ff - n_hot, cold_ids)
            )
            gate = _matrix(at[first], fdtype.dtype, n, d)
            up = _matrix(at[first + 1], fdtype.dtype, n, d)
            down_t = _matrix(at[first + 2], fdtype.dtype, n, d)
            per = (side_ids.size + threads - 1) // threads
            mine = side_ids[c * per : (c + 1) * per]
            down_rows[c, side] = _neurons(h.reshape((1, d)), gate, up, down_t, no_bias, mine,
                                          act, cut, tau, partial[c, side : side + 1])  # fmt: skip
    out[:] = 0.0
    for c in range(threads):
        out += partial[c, 0] + partial[c, 1]
    return n_act, down_rows.sum()


@njit(parallel=True, fastmath=FASTMATH, cache=True, nogil=True)
def decode_blocks_kernel(
    x, pos, dims, tensors, knobs, wdtype, fdtype, pdtype, sparse, eps, cos, sin, cache_k, cache_v,
    cache_len, computed, threads,
):  # fmt: skip
    """x [d_model] fp32, the residual stream of the token at `pos`, updated in place.

    dims: (layers, heads, kv_heads, head_dim, d_ff). tensors: int64 [layers, COLUMNS]
    addresses; knobs: float64 [layers, KNOBS] (the column constants above). wdtype, fdtype,
    pdtype: empty arrays of the attention, FFN and predictor weights' dtypes. sparse: the FFNs
    are neuron-sparse.
    cos, sin: fp32 [head_dim] at pos. cache_k/v: addresses of fp32
    [layers, kv_heads, cache_len, head_dim]. computed: int64 [layers, 2], set to the neurons
    each FFN computed and the down rows it read. threads: numba's thread count.
    """
    n_layers, heads, kv_heads, head_dim, d_ff = dims[0], dims[1], dims[2], dims[3], dims[4]
    d = x.size
    cache_shape = (n_layers, kv_heads, cache_len, head_dim)
    keys = numba.carray(_pointer(cache_k, numba.float32), cache_shape)
    values = numba.carray(_pointer(cache_v, numba.float32), cache_shape)
    h, out = np.empty(d, np.float32), np.empty(d, np.float32)
    for layer in range(n_layers):
        at = tensors[layer]
        _attention(
            x, pos, at, wdtype, heads, head_dim, eps, cos, sin, keys[layer], values[layer], threads
        )
        _rms_norm(x, numba.carray(_pointer(at[FFN_NORM], numba.float32), (d,)), eps, h)
        if sparse:
            n_act, down_rows = _sparse_ffn(h, out, at, fdtype, pdtype, d_ff, knobs[layer], threads)
            computed[layer, 0], computed[layer, 1] = n_act, down_rows
        else:
            _dense_ffn(h, out, at, fdtype, d_ff, knobs[layer], threads)
            computed[layer] = d_ff
        _add_bias(out, at[DOWN_BIAS], 0)
        x += out
