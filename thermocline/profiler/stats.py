"""Per-layer sparsity and skew of activation counts (the paper's power-law picture)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def top_share(counts: Tensor, fraction: float) -> float:
    """Share of all activations that the `fraction` most active neurons account for."""
    total = int(counts.sum())
    if total == 0:
        return 0.0
    k = max(1, math.ceil(fraction * counts.numel()))
    return int(counts.topk(k).values.sum()) / total


def gini(counts: Tensor) -> float:
    """Gini coefficient of the counts: 0 = every neuron equally active, ->1 = one neuron."""
    x = counts.double().sort().values
    n, total = x.numel(), float(x.sum())
    if total == 0:
        return 0.0
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    return float(2 * (ranks * x).sum() / (n * total) - (n + 1) / n)


def layer_stats(counts: Tensor, tokens: int, threshold: float) -> dict[str, float]:
    """The profile.json entry of one layer."""
    return {
        "sparsity": 1 - int(counts.sum()) / (tokens * counts.numel()),
        "top10_share": top_share(counts, 0.1),
        "top20_share": top_share(counts, 0.2),
        "gini": gini(counts),
        "threshold": threshold,
    }
