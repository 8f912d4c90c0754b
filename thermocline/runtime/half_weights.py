"""16-bit weights with fp32 activations: how a model loaded as fp16 or bf16 runs on the CPU.

A CPU has no fast 16-bit arithmetic for one token: torch's fp16/bf16 GEMV and elementwise
ops are slower per byte than their fp32 versions. So the weight matrices and the embedding
stay in 16 bits (half the bytes to read, memory-mapped where they come from an artifact),
and everything else (norm weights, biases, hidden states, the KV cache) is fp32. One token
goes through the numba GEMV, which widens weights to fp32 in registers; several tokens
(prefill) through torch's GEMM in the weight dtype, whose AMX / AVX-512 kernels win there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thermocline.models.transformer import Transformer
from thermocline.runtime.kernels.cpu_gemv import CpuGemv

HALF_DTYPES = (torch.float16, torch.bfloat16)


class HalfLinear(nn.Module):
    """nn.Linear over a 16-bit weight, fp32 in and out. Keeps the names weight and bias."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight = linear.weight  # the same Parameter: a tied embedding stays tied
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.float(), False)
        self.gemv = CpuGemv(self.weight)  # a view of the weight as it is now: swap in last

    def forward(self, x: Tensor) -> Tensor:
        if x.numel() == x.shape[-1]:  # one token
            y = self.gemv(x).view(*x.shape[:-1], -1)
        else:
            y = F.linear(x.to(self.weight.dtype), self.weight).float()
        return y if self.bias is None else y + self.bias


class HalfEmbedding(nn.Module):
    """nn.Embedding over a 16-bit table that returns fp32 rows."""

    def __init__(self, embedding: nn.Embedding):
        super().__init__()
        self.weight = embedding.weight

    def forward(self, tokens: Tensor) -> Tensor:
        return F.embedding(tokens, self.weight).float()


def use_half_weights(model: Transformer) -> Transformer:
    """In place, on the CPU part of a loaded model whose weights are fp16 or bf16 (call after
    loading; parts placed elsewhere, such as on a GPU, are left as they are)."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            weight = getattr(child, "weight", None)
            if weight is None or not weight.is_cpu or weight.dtype not in HALF_DTYPES:
                continue
            if isinstance(child, nn.Linear):
                setattr(module, name, HalfLinear(child))
            elif isinstance(child, nn.Embedding):
                setattr(module, name, HalfEmbedding(child))
            elif isinstance(child, nn.RMSNorm | nn.LayerNorm):
                child.float()
    return model
