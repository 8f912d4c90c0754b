"""Oracle sparsity: a profile's thresholds applied exactly to the dense model (no predictor)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from thermocline.errors import ThermoclineError
from thermocline.models.transformer import Transformer
from thermocline.profiler.artifact import load_profile


def apply_thresholds(model: Transformer, profile_dir: str | Path) -> list[float]:
    """Set every `block.ffn.threshold` from the profile (0 for the ReLU family); returns them."""
    profile = load_profile(profile_dir)
    cfg, theirs = model.cfg, profile.config
    shape, their_shape = (
        (cfg.n_layers, cfg.d_model, cfg.d_ff),
        (theirs.n_layers, theirs.d_model, theirs.d_ff),
    )
    if shape != their_shape or cfg.activation != theirs.activation:
        raise ThermoclineError(
            f"profile {profile_dir} is of a model with (layers, d_model, d_ff) = {their_shape} and "
            f"{theirs.activation}; this model has {shape} and {cfg.activation}"
        )
    for block, threshold in zip(model.layers, profile.thresholds, strict=True):
        block.ffn.threshold = threshold
    return profile.thresholds


@dataclass
class SparsityMeter:
    """Zeros among the activations h fed to the down projections, over every token run."""

    zeros: list[int] = field(default_factory=list)  # per layer
    total: list[int] = field(default_factory=list)

    @property
    def sparsity(self) -> float:
        return sum(self.zeros) / sum(self.total) if sum(self.total) else 0.0

    @property
    def layer_sparsity(self) -> list[float]:
        return [z / t if t else 0.0 for z, t in zip(self.zeros, self.total, strict=True)]

    def observe(self, layer: int, h: Tensor) -> None:
        self.zeros[layer] += int((h == 0).sum())
        self.total[layer] += h.numel()


@contextmanager
def measure_sparsity(model: Transformer) -> Iterator[SparsityMeter]:
    """Within the block, count zero activations of every layer (a hook on each ffn.down)."""
    n = len(model.layers)
    meter = SparsityMeter([0] * n, [0] * n)
    handles = [
        block.ffn.down.register_forward_pre_hook(lambda m, args, i=i: meter.observe(i, args[0]))
        for i, block in enumerate(model.layers)
    ]
    try:
        yield meter
    finally:
        for handle in handles:
            handle.remove()
