"""One decode token through all blocks of a LLaMA-family model in one numba call.

engine.load_model installs it on the dense CPU models it loads, and the artifact engine on
its CPU-only models (sparse, or dense mode); kernels/cpu_decode.py says why. Transformer.forward
uses it for one token with a KV cache and runs its blocks in torch otherwise (prefill,
perplexity windows, models it cannot fuse: OPT, hot neurons on a GPU, test predictors).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from thermocline.converter.reader import Predictor
from thermocline.models.transformer import FeedForward, KVCache, Transformer
from thermocline.runtime.kernels import ACTIVATIONS
from thermocline.runtime.sparse_ffn import SparseFeedForward

_FUSABLE_WEIGHTS = (torch.float32, torch.float16, torch.bfloat16)


def _attention_weights(model: Transformer) -> list[list[Tensor]]:
    return [[b.attn.wqkv.weight, b.attn.wo.weight] for b in model.layers]


def _ffn_weights(model: Transformer) -> list[list[Tensor]]:
    """Per layer, in the kernel's column order: gate, up, down (dense) or the hot block's
    gate, up, down_t, then the cold block's (sparse)."""
    layers = []
    for b in model.layers:
        ffn = b.ffn
        if isinstance(ffn, FeedForward):
            layers.append([ffn.gate.weight, ffn.up.weight, ffn.down.weight])
        else:
            layers.append(
                [t for blk in (ffn.hot, ffn.cold) for t in (blk.gate, blk.up, blk.down_t)]
            )
    return layers


def _vectors(model: Transformer) -> list[list[Tensor | None]]:
    """Per layer the norm weights and biases, in the kernel's column order (None: no bias)."""
    layers = []
    for b in model.layers:
        ffn = b.ffn
        up_bias, down_bias = (
            (ffn.up.bias, ffn.down.bias) if isinstance(ffn, FeedForward) else (None, ffn.down_bias)
        )
        norms_and_attention = [
            b.attn_norm.weight,
            b.ffn_norm.weight,
            b.attn.wqkv.bias,
            b.attn.wo.bias,
        ]
        layers.append(norms_and_attention + [up_bias, down_bias])
    return layers


def _cpu_sparse(ffn: torch.nn.Module) -> bool:
    """A SparseFeedForward the fused step computes exactly: all on the CPU, no up bias (the
    sparse kernel adds one for non-gated FFNs only), the artifact's predictor or none."""
    if not isinstance(ffn, SparseFeedForward):
        return False
    p, cfg = ffn.predictor, ffn.cfg
    return (
        ffn.hot_device.type == "cpu"
        and ffn.hot.up_bias is None and ffn.cold.up_bias is None
        and (p is None or isinstance(p, Predictor)
             and p.w1.shape == (p.rank, cfg.d_model) and p.w2.shape == (cfg.d_ff, p.rank))
    )  # fmt: skip


def _predictor_dtype(ffns: list[SparseFeedForward]) -> torch.dtype:
    """fp16 where that is exact for every predictor weight: an artifact stores them in fp16
    (the runtime's fp32 copies hold the same values), and reading them so halves the ~5% of a
    token's bytes they are. Else fp32. (A dense model's step has none: fp16, one compile.)"""
    weights = [w for f in ffns if f.predictor is not None for w in (f.predictor.w1, f.predictor.w2)]
    exact = all(torch.equal(w.half().float(), w.float()) for w in weights)
    return torch.float16 if exact else torch.float32


def why_not_fusable(model: Transformer) -> str | None:
    """None when the fused step computes exactly what the model's blocks do; else the reason."""
    cfg = model.cfg
    if cfg.arch != "llama" or not cfg.norm_before or cfg.embed_dim != cfg.d_model:
        return f"{cfg.arch} layout (the fused step is pre-norm LLaMA-family)"
    ffns = [b.ffn for b in model.layers]
    if not (all(isinstance(f, FeedForward) for f in ffns) or all(_cpu_sparse(f) for f in ffns)):
        return "the FFNs are neither dense nor neuron-sparse on the CPU"
    for weights in (_attention_weights(model), _ffn_weights(model)):
        flat = [w for layer in weights for w in layer]
        if any(not w.is_cpu for w in flat) or len({w.dtype for w in flat}) != 1:
            return "weights are not on the CPU in one dtype (attention, FFN)"
        if flat[0].dtype not in _FUSABLE_WEIGHTS:
            return f"{flat[0].dtype} weights"
    vectors = [t for layer in _vectors(model) for t in layer if t is not None]
    if any(t.dtype != torch.float32 or not t.is_contiguous() for t in vectors):
        return "norms and biases are not fp32 (activations in another dtype)"
    return None


class FusedDecode:
    """Reads the model's weights, norms and biases in place, through their addresses: build it
    once they are final (in-place updates are seen, replaced tensors are not). FFN thresholds
    are read at every call; sparse FFNs' stats are kept as their own forward keeps them. One
    call at a time (shared scratch), as with the CPU kernels."""

    def __init__(self, model: Transformer):
        from thermocline.runtime.kernels import cpu_decode as k
        from thermocline.runtime.kernels.cpu_sparse import numba_threads, weight_view

        if reason := why_not_fusable(model):
            raise ValueError(f"cannot fuse this model's decode step: {reason}")
        self.kernel, self.cut = k.decode_blocks_kernel, k.CUT
        cfg = model.cfg
        self.ffns = [b.ffn for b in model.layers]
        # The hook registries of every module in the blocks: registering a hook adds to one of
        # these dicts, so the per-token check scans them (~5 us for SmolLM2's 30 blocks).
        self.hook_dicts = [
            hooks for b in model.layers for m in b.modules()
            for hooks in (m._forward_hooks, m._forward_pre_hooks)
        ]  # fmt: skip
        self.sparse = isinstance(self.ffns[0], SparseFeedForward)
        attention = [[weight_view(w) for w in layer] for layer in _attention_weights(model)]
        ffn = [[weight_view(w) for w in layer] for layer in _ffn_weights(model)]
        vectors = _vectors(model)
        self._keep = [attention, ffn, vectors]  # the kernel reads these addresses
        self.wdtype, self.fdtype = attention[0][0][:0, 0], ffn[0][0][:0, 0]
        predictor_dtype = _predictor_dtype(self.ffns) if self.sparse else torch.float16
        self.pdtype = weight_view(torch.empty(0, dtype=predictor_dtype))
        self.tensors = np.zeros((cfg.n_layers, k.COLUMNS), np.int64)
        # Thresholds compare as the torch path does: in fp32 (a float32 tensor against a Python
        # float) for dense FFNs and the predictor, in float64 in the sparse CPU kernel.
        self.as_compared = float if self.sparse else np.float32
        self.knobs = np.zeros((cfg.n_layers, k.KNOBS), np.float64)
        self.knobs[:, k.ACT] = ACTIVATIONS.index(cfg.activation)
        self.knobs[:, k.TAU] = self.as_compared(cfg.activation_threshold)
        for i, layer_vectors in enumerate(vectors):
            row = self.tensors[i]
            row[[k.WQKV, k.WO]] = [w.ctypes.data for w in attention[i]]
            row[k.ATTN_NORM : k.DOWN_BIAS + 1] = [
                0 if t is None else t.data_ptr() for t in layer_vectors
            ]
            if not self.sparse:
                row[k.GATE : k.DOWN + 1] = [w.ctypes.data for w in ffn[i]]
                continue
            row[k.HOT_GATE : k.COLD_GATE + 3] = [w.ctypes.data for w in ffn[i]]
            row[k.N_HOT] = self.ffns[i].hot.n
            if (predictor := self.ffns[i].predictor) is not None:
                w1, w2 = (weight_view(w.to(predictor_dtype)) for w in (predictor.w1, predictor.w2))
                self._keep.append((w1, w2))
                row[[k.W1, k.W2, k.RANK]] = [w1.ctypes.data, w2.ctypes.data, predictor.rank]
                self.knobs[i, k.LOGIT_CUT] = np.float32(predictor.threshold)
                self.knobs[i, k.PREDICTOR_ACT] = ACTIVATIONS.index(predictor.nonlinearity)
        self.dims = np.array(
            [cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff], np.int64
        )
        self.cache_shape = (cfg.n_layers, 1, cfg.n_kv_heads, cfg.head_dim)
        self.eps, self.d_model, self.d_ff = float(cfg.norm_eps), cfg.d_model, cfg.d_ff
        self.cos = model.rope_cos[:, 0].float().contiguous().numpy()
        self.sin = model.rope_sin[:, 0].float().contiguous().numpy()
        self.computed = np.zeros((cfg.n_layers, 2), np.int64)  # neurons, down rows read
        self.threads = numba_threads()

    def covers(self, model: Transformer) -> bool:
        """Whether the model still runs what was fused: the same FFN modules (not swapped for
        evaluation), no hooks in its blocks (the profiler's), no recall being measured."""
        # Through the modules' own dicts: nn.Module's attribute lookup made this ~110 us a token.
        return (
            not any(self.hook_dicts)
            and all(b._modules["ffn"] is f for b, f in zip(model.layers, self.ffns, strict=True))
            and not (self.sparse and any(f.measure_recall for f in self.ffns))
        )

    def __call__(self, x: Tensor, start: int, cache: KVCache) -> Tensor:
        """x: the token's embedding [1, 1, d_model] fp32 -> the last block's output."""
        k, v = cache.k, cache.v
        # The kernel writes the cache through raw addresses: check what it assumes.
        if not (
            k is not None and v is not None
            and k.dtype is v.dtype is torch.float32 and k.is_cpu and v.is_cpu
            and k.is_contiguous() and v.is_contiguous() and k.shape == v.shape
            and k.shape[:3] + k.shape[4:] == self.cache_shape
            and 0 <= start < k.shape[3] and x.numel() == self.d_model
        ):  # fmt: skip
            raise ValueError("the fused decode step takes one token and a batch-1 fp32 CPU cache")
        self.knobs[:, self.cut] = [self.as_compared(f.threshold) for f in self.ffns]
        x = x.reshape(-1).float().clone()
        self.kernel(
            x.numpy(), start, self.dims, self.tensors, self.knobs, self.wdtype, self.fdtype,
            self.pdtype, self.sparse, self.eps, self.cos[start], self.sin[start], k.data_ptr(),
            v.data_ptr(), k.shape[3], self.computed, self.threads,
        )  # fmt: skip
        if self.sparse:
            for ffn, (computed, down_rows) in zip(self.ffns, self.computed.tolist(), strict=True):
                stats = ffn.stats
                stats.tokens, stats.neurons = stats.tokens + 1, stats.neurons + self.d_ff
                stats.computed += computed
                stats.down_rows += down_rows
        return x.view(1, 1, -1)


def use_fused_decode(model: Transformer) -> bool:
    """Install the fused step on the model when it can run it; whether it did."""
    if why_not_fusable(model) is not None:
        return False
    model.fused_decode = FusedDecode(model)
    return True
