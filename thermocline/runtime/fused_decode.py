"""One decode token through all blocks of a dense LLaMA-family model in one numba call.

engine.load_model installs it on the CPU models it loads (kernels/cpu_decode.py says why);
Transformer.forward uses it for one token with a KV cache and runs its blocks in torch
otherwise (prefill, perplexity windows, models it cannot fuse).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from thermocline.models.transformer import FeedForward, KVCache, Transformer
from thermocline.runtime.kernels import ACTIVATIONS

_FUSABLE_WEIGHTS = (torch.float32, torch.float16, torch.bfloat16)


def _weights(model: Transformer) -> list[list[Tensor]]:
    """Per layer the five projections the kernel reads, in its order."""
    return [
        [b.attn.wqkv.weight, b.attn.wo.weight]
        + [b.ffn.gate.weight, b.ffn.up.weight, b.ffn.down.weight]
        for b in model.layers
    ]


def _vectors(model: Transformer) -> list[list[Tensor | None]]:
    """Per layer the norm weights and biases the kernel reads, in its order (None: no bias)."""
    return [
        [b.attn_norm.weight, b.ffn_norm.weight, b.attn.wqkv.bias, b.attn.wo.bias]
        + [b.ffn.up.bias, b.ffn.down.bias]
        for b in model.layers
    ]


def why_not_fusable(model: Transformer) -> str | None:
    """None when the fused step computes exactly what the model's blocks do; else the reason."""
    cfg = model.cfg
    if cfg.arch != "llama" or not cfg.norm_before or cfg.embed_dim != cfg.d_model:
        return f"{cfg.arch} layout (the fused step is pre-norm LLaMA-family)"
    if any(not isinstance(b.ffn, FeedForward) for b in model.layers):
        return "the FFNs are not dense"
    vectors = [t for layer in _vectors(model) for t in layer if t is not None]
    if any(t.dtype != torch.float32 or not t.is_contiguous() for t in vectors):
        return "norms and biases are not fp32 (activations in another dtype)"
    weights = [w for layer in _weights(model) for w in layer]
    if any(not w.is_cpu for w in weights) or len({w.dtype for w in weights}) != 1:
        return "weights are not on the CPU in one dtype"
    if weights[0].dtype not in _FUSABLE_WEIGHTS:
        return f"{weights[0].dtype} weights"
    return None


class FusedDecode:
    """Reads the model's weights, norms and biases in place, through their addresses: build it
    once they are final (in-place updates are seen; replaced tensors or modules are not).
    FFN thresholds are read at every call."""

    def __init__(self, model: Transformer):
        from thermocline.runtime.kernels.cpu_sparse import numba_threads, weight_view

        if reason := why_not_fusable(model):
            raise ValueError(f"cannot fuse this model's decode step: {reason}")
        cfg, self.blocks = model.cfg, list(model.layers)
        self.cache_shape = (cfg.n_layers, 1, cfg.n_kv_heads, cfg.head_dim)
        self._weights = [[weight_view(w) for w in layer] for layer in _weights(model)]
        self._vectors = _vectors(model)
        self.tensors = np.array(
            [
                [v.ctypes.data for v in weights]
                + [0 if t is None else t.data_ptr() for t in vectors]
                for weights, vectors in zip(self._weights, self._vectors, strict=True)
            ],
            np.int64,
        )
        self.wdtype = self._weights[0][0][:0, 0]
        self.dims = np.array(
            [cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff], np.int64
        )
        self.eps, self.d_model = float(cfg.norm_eps), cfg.d_model
        self.cos = model.rope_cos[:, 0].float().contiguous().numpy()
        self.sin = model.rope_sin[:, 0].float().contiguous().numpy()
        self.ffn = np.zeros((cfg.n_layers, 3), np.float32)
        self.ffn[:, 0] = ACTIVATIONS.index(cfg.activation)
        self.ffn[:, 2] = cfg.activation_threshold
        self.threads = numba_threads()

    def __call__(self, x: Tensor, start: int, cache: KVCache) -> Tensor:
        """x: the token's embedding [1, 1, d_model] fp32 -> the last block's output."""
        from thermocline.runtime.kernels.cpu_decode import decode_blocks_kernel

        # The kernel writes the cache through raw addresses: check what it assumes.
        if not (
            cache.k.dtype is cache.v.dtype is torch.float32
            and cache.k.is_contiguous() and cache.v.is_contiguous()
            and cache.k.shape[:3] + cache.k.shape[4:] == self.cache_shape
            and 0 <= start < cache.max_len and x.numel() == self.d_model
        ):  # fmt: skip
            raise ValueError("the fused decode step takes one token and a batch-1 fp32 cache")
        self.ffn[:, 1] = [b.ffn.threshold for b in self.blocks]
        x = x.reshape(-1).float().clone()
        decode_blocks_kernel(
            x.numpy(), start, self.dims, self.tensors, self.wdtype, self.eps, self.cos[start],
            self.sin[start], cache.k.data_ptr(), cache.v.data_ptr(), cache.max_len, self.ffn,
            self.threads,
        )  # fmt: skip
        return x.view(1, 1, -1)


def use_fused_decode(model: Transformer) -> bool:
    """Install the fused step on the model when it can run it; whether it did."""
    if why_not_fusable(model) is not None:
        return False
    model.fused_decode = FusedDecode(model)
    return True
