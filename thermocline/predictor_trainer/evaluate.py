"""Evaluating predictors inside the dense model: each FFN computes only predicted-active neurons.

`predicted_masks` wraps every `block.ffn` so the activation h fed to the down projection is
multiplied by the layer's predicted mask (and, for SiLU/GELU, zeroed where |h| <= the profile's
threshold, as the sparse runtime does), and counts realized sparsity and recall against the
true active set (h != 0 after the threshold). Quality then comes from any dense evaluation
(perplexity) run inside the context.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from thermocline.errors import ThermoclineError
from thermocline.models.transformer import FeedForward, Transformer
from thermocline.predictor_trainer.io import load_predictors
from thermocline.predictor_trainer.model import LayerPredictor, Predictors
from thermocline.profiler import load_profile


@dataclass
class MaskStats:
    """Per-layer counts of (token, neuron) pairs seen under predicted masks."""

    pairs: list[int] = field(default_factory=list)
    computed: list[int] = field(default_factory=list)  # predicted active: the neurons computed
    active: list[int] = field(default_factory=list)  # truly active
    hits: list[int] = field(default_factory=list)  # predicted and truly active

    def layer(self, i: int) -> dict[str, float]:
        return _rates(self.pairs[i], self.computed[i], self.active[i], self.hits[i])

    def total(self) -> dict[str, float]:
        return _rates(sum(self.pairs), sum(self.computed), sum(self.active), sum(self.hits))

    def summary(self) -> str:
        t = self.total()
        return (
            f"predicted masks: realized sparsity {t['realized_sparsity']:.3f} "
            f"(true {t['true_sparsity']:.3f}), recall {t['recall']:.3f}, precision {t['precision']:.3f}"
        )


def _rates(pairs: int, computed: int, active: int, hits: int) -> dict[str, float]:
    return {
        "realized_sparsity": 1 - computed / pairs if pairs else 0.0,
        "true_sparsity": 1 - active / pairs if pairs else 0.0,
        "recall": hits / active if active else 1.0,
        "precision": hits / computed if computed else 1.0,
    }


class PredictedFFN(nn.Module):
    """A FeedForward that keeps only the neurons its predictor says are active."""

    def __init__(self, ffn: FeedForward, predictor: LayerPredictor, stats: MaskStats, layer: int):
        super().__init__()
        self.ffn, self.predictor, self.stats, self.layer = ffn, predictor, stats, layer

    def forward(self, x: Tensor) -> Tensor:
        h = self.ffn.activation(x)  # applies the magnitude threshold: inactive neurons are 0
        active, predicted = h != 0, self.predictor.predict(x)
        i, s = self.layer, self.stats
        s.pairs[i] += active.numel()
        s.computed[i] += int(torch.count_nonzero(predicted))
        s.active[i] += int(torch.count_nonzero(active))
        s.hits[i] += int(torch.count_nonzero(active & predicted))
        return self.ffn.down(h * predicted.to(h.dtype))


@contextmanager
def predicted_masks(
    model: Transformer, predictors: Predictors, thresholds: list[float]
) -> Iterator[MaskStats]:
    """Run `model` with predicted masks (and activation thresholds) inside the block."""
    cfg = model.cfg
    if len(predictors.layers) != cfg.n_layers or len(thresholds) != cfg.n_layers:
        raise ThermoclineError(
            f"the model has {cfg.n_layers} layers but the predictors have {len(predictors.layers)} "
            f"and the profile {len(thresholds)}: use predictors trained on this model's profile"
        )
    for p in predictors.layers:
        if p.w1.shape[1] != cfg.d_model or p.w2.shape[0] != cfg.d_ff:
            raise ThermoclineError(
                f"predictors map {p.w1.shape[1]} -> {p.w2.shape[0]} but the model's FFN is "
                f"{cfg.d_model} -> {cfg.d_ff}: use predictors trained on this model"
            )
    device = model.embed.weight.device
    stats = MaskStats(*([0] * cfg.n_layers for _ in range(4)))
    saved = [(block.ffn, block.ffn.threshold) for block in model.layers]
    try:
        for i, block in enumerate(model.layers):
            if not cfg.zero_sparse:
                block.ffn.threshold = float(thresholds[i])
            p = predictors.layers[i]
            on_device = LayerPredictor(p.w1.to(device), p.w2.to(device), p.threshold)
            block.ffn = PredictedFFN(block.ffn, on_device, stats, i)
        yield stats
    finally:
        for block, (ffn, threshold) in zip(model.layers, saved, strict=True):
            ffn.threshold = threshold
            block.ffn = ffn


@contextmanager
def predicted_masks_from(
    model: Transformer, predictors_dir: Path, profile_dir: Path | None = None
) -> Iterator[MaskStats]:
    """`predicted_masks` from folders; the profile defaults to the one the predictors recorded."""
    predictors = load_predictors(predictors_dir)
    profile = Path(profile_dir or predictors.meta.get("profile", ""))
    if not (profile / "profile.json").is_file():
        raise ThermoclineError(
            f"the profile {str(profile)!r} the predictors were trained on is not there: pass --profile"
        )
    with predicted_masks(model, predictors, load_profile(profile).thresholds) as stats:
        yield stats
