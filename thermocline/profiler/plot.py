"""The profile at a glance: per layer, sorted neuron activation frequency and coverage curves."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


def plot_profile(counts: list[Tensor], tokens: int, title: str, path: Path) -> None:
    """Left: activation frequency of each neuron, sorted, vs its rank (as a fraction of d_ff).
    Right: share of all activations covered by the most active fraction of neurons (the
    paper's power law: a few hot neurons cover most activations; the diagonal is no skew)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (freq_ax, cover_ax) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    cmap = plt.get_cmap("viridis")
    n_layers = len(counts)
    for i, c in enumerate(counts):
        sorted_counts = c.double().sort(descending=True).values
        rank = (torch.arange(len(c), dtype=torch.float64) + 1) / len(c)
        color = cmap(i / max(1, n_layers - 1))
        freq_ax.plot(rank, sorted_counts / tokens, color=color, lw=1)
        total = sorted_counts.sum()
        if total > 0:
            cover_ax.plot(rank, sorted_counts.cumsum(0) / total, color=color, lw=1)
    freq_ax.set(
        xlabel="neuron rank (fraction of neurons, most active first)",
        ylabel="activation frequency",
        yscale="log",
        xlim=(0, 1),
    )
    freq_ax.grid(alpha=0.3)
    cover_ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="uniform")
    for share in (0.1, 0.2):
        cover_ax.axvline(share, color="gray", lw=0.6, ls=":")
    cover_ax.set(
        xlabel="fraction of neurons (most active first)",
        ylabel="share of activations covered",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    cover_ax.grid(alpha=0.3)
    cover_ax.legend(loc="lower right")
    scale = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, max(1, n_layers - 1)))
    fig.colorbar(scale, ax=cover_ax, label="layer")
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
