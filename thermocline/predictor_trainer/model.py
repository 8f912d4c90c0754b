"""The predictor of one layer: logits = w2 @ relu(w1 @ x), active iff logit > threshold.

ReLU, as in the paper and DejaVu: it is the cheapest nonlinearity at run time (one max, no
exp), it gives the runtime one formula for every model, and a pair of ReLU units represents
|a . x| exactly, which is what "the magnitude of a SiLU/GELU activation exceeds t" needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

NONLINEARITY = "relu"


@dataclass
class LayerPredictor:
    w1: Tensor  # [rank, d_model]
    w2: Tensor  # [d_ff, rank]
    threshold: float = 0.0  # logit threshold: a neuron is predicted active iff logit > threshold
    metrics: dict[str, Any] = field(default_factory=dict)  # held-out recall, precision, ...

    @classmethod
    def init(cls, d_model: int, d_ff: int, rank: int, generator: torch.Generator) -> LayerPredictor:
        """nn.Linear's default (Kaiming-uniform) init, fp32."""
        w1 = (torch.rand(rank, d_model, generator=generator) * 2 - 1) / d_model**0.5
        w2 = (torch.rand(d_ff, rank, generator=generator) * 2 - 1) / rank**0.5
        return cls(w1, w2)

    @property
    def rank(self) -> int:
        return self.w1.shape[0]

    @property
    def bytes(self) -> int:
        """Size in fp16, the dtype it is stored and run in."""
        return 2 * (self.w1.numel() + self.w2.numel())

    def logits(self, x: Tensor) -> Tensor:
        """[..., d_ff] float32 logits for FFN inputs x [..., d_model] (any float dtype)."""
        w1, w2 = self.w1.to(x.device), self.w2.to(x.device)
        return torch.relu(x.to(w1.dtype) @ w1.T) @ w2.T

    def predict(self, x: Tensor) -> Tensor:
        """Bool [..., d_ff]: which neurons to compute for each token."""
        return self.logits(x) > self.threshold

    def rounded(self) -> LayerPredictor:
        """The same predictor with fp16-rounded weights (fp32 tensors), as stored on disk."""
        w1, w2 = (w.detach().half().float() for w in (self.w1, self.w2))
        return LayerPredictor(w1, w2, self.threshold, dict(self.metrics))


@dataclass
class Predictors:
    layers: list[LayerPredictor]
    meta: dict[str, Any]  # predictors.json

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.layers)
