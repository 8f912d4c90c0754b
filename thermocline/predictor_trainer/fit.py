"""Training one predictor of a given rank, and tuning its logit threshold on held-out tokens."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from thermocline.errors import ThermoclineError
from thermocline.predictor_trainer.config import TrainConfig
from thermocline.predictor_trainer.model import LayerPredictor

Report = Callable[[str], None]


@dataclass
class LayerData:
    """One layer's tokens on the training device: FFN inputs (fp32) and active masks (bool)."""

    train_x: Tensor
    train_y: Tensor
    held_x: Tensor
    held_y: Tensor
    positive_rate: float  # share of active (token, neuron) pairs in the training tokens
    # Inputs are standardized for training (the FFN norm's weights scale features very
    # unevenly); the scale is folded into w1 after, so the stored predictor is w2 relu(w1 x).
    scale: Tensor

    @classmethod
    def split(cls, inputs: Tensor, mask: Tensor, holdout: float, device: str) -> LayerData:
        """The last `holdout` share of tokens is held out: a contiguous slice of text, so
        held-out tokens do not share sentences (and their hidden states) with training ones."""
        n_held = max(1, round(len(inputs) * holdout))
        if len(inputs) - n_held < 1:
            raise ThermoclineError(
                f"{len(inputs)} training tokens are too few to hold {n_held} out: "
                "profile with more --train-tokens or raise --max-tokens"
            )
        x, y = inputs.to(device, torch.float32), mask.to(device)
        train_x, train_y = x[:-n_held], y[:-n_held]
        rate = int(torch.count_nonzero(train_y)) / train_y.numel()
        scale = train_x.std(0).clamp_min(1e-6).reciprocal()
        return cls(train_x, train_y, x[-n_held:], y[-n_held:], rate, scale)


def class_weights(positive_rate: float) -> tuple[float, float]:
    """DejaVu's weights: positives (1 - w), negatives w, with w = positive rate + 0.005.

    Active neurons are the minority in sparse layers; this makes both classes weigh the same in
    total (p (1 - w) ~ (1 - p) w), so the model spends its capacity on the rare active pairs that
    recall counts instead of on the easy negatives. The 0.005 keeps some weight on the negatives
    of layers that almost never fire."""
    w = min(positive_rate + 0.005, 0.995)
    return 1 - w, w


def weighted_bce(logits: Tensor, target: Tensor, positive_rate: float) -> Tensor:
    pos, neg = class_weights(positive_rate)
    pos_weight = torch.tensor(pos / neg, device=logits.device)
    return neg * F.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=pos_weight)


def weighted_bce_grad(logits: Tensor, target: Tensor, positive_rate: float) -> Tensor:
    """d weighted_bce / d logits = w_y (sigmoid(logits) - y) / n, without the loss itself:
    training never reads the loss value, and this elementwise work (in place, so no fresh
    pages per step) rather than the matmuls dominates a CPU step."""
    pos, neg = class_weights(positive_rate)
    n = logits.numel()
    grad = torch.sigmoid(logits.detach())
    weight = target.to(grad.dtype)
    grad.sub_(weight)
    weight.mul_((pos - neg) / n).add_(neg / n)
    return grad.mul_(weight)


def tune_threshold(logits: Tensor, mask: Tensor, recall: float) -> float:
    """The largest logit threshold t with recall(logit > t) >= target over all (token, neuron)
    pairs: just below the ceil(recall * P)-th largest logit of the P active pairs. (numpy:
    its boolean gather and partition are several times faster than torch's on a CPU.)"""
    positives = logits.cpu().numpy()[mask.cpu().numpy()]
    if positives.size == 0:  # nothing fires: predict nothing
        return float(logits.max()) if logits.numel() else 0.0
    index = positives.size - math.ceil(recall * positives.size)
    kth_largest = np.partition(positives, index)[index]
    return float(np.nextafter(kth_largest, np.float32(-np.inf)))


def heldout_metrics(logits: Tensor, mask: Tensor, threshold: float) -> dict[str, float]:
    predicted = logits > threshold
    hits = int(torch.count_nonzero(predicted & mask))
    positives, chosen = int(torch.count_nonzero(mask)), int(torch.count_nonzero(predicted))
    return {
        "recall": hits / positives if positives else 1.0,
        "precision": hits / chosen if chosen else 1.0,
        "predicted_sparsity": 1 - chosen / mask.numel(),
        "true_sparsity": 1 - positives / mask.numel(),
    }


CHUNK = 2048  # held-out tokens per evaluation step: temporaries small enough to be reused


@torch.no_grad()
def _heldout_logits(predictor: LayerPredictor, x: Tensor) -> Tensor:
    return torch.cat([predictor.logits(part) for part in x.split(CHUNK)])


@torch.no_grad()
def _heldout_loss(predictor: LayerPredictor, data: LayerData) -> tuple[float, float]:
    """(weighted BCE, recall at logit 0) on the held-out tokens, chunk by chunk."""
    loss, hits = 0.0, 0
    for x, y in zip(data.held_x.split(CHUNK), data.held_y.split(CHUNK), strict=True):
        logits = predictor.logits(x)
        loss += float(weighted_bce(logits, y, data.positive_rate)) * y.numel()
        hits += int(torch.count_nonzero((logits > 0) & y))
    return loss / data.held_y.numel(), hits / max(1, int(torch.count_nonzero(data.held_y)))


def fit_predictor(
    data: LayerData,
    rank: int,
    config: TrainConfig,
    epochs: int,
    report: Report | None = None,
    start: LayerPredictor | None = None,
) -> LayerPredictor:
    """AdamW on the weighted BCE for up to `epochs` (from `start`, or a fresh init), early
    stopping on the held-out loss; the fp16-rounded weights (what is stored and run) of the
    best epoch then get their logit threshold and held-out metrics."""
    device, scale = data.train_x.device, data.scale
    generator = torch.Generator().manual_seed(config.seed * 1009 + rank)
    if start is None:
        init = LayerPredictor.init(data.train_x.shape[1], data.train_y.shape[1], rank, generator)
        w1, w2 = init.w1.to(device), init.w2.to(device)
        best, best_loss = None, math.inf
    else:
        w1, w2 = start.w1.to(device) / scale, start.w2.to(device).clone()
        best, best_loss = start, _heldout_loss(start, data)[0]
    w1.requires_grad_(), w2.requires_grad_()
    predictor = LayerPredictor(w1, w2)
    optimizer = torch.optim.AdamW([w1, w2], lr=config.lr, weight_decay=config.weight_decay)
    stale = 0
    for epoch in range(epochs):
        order = torch.randperm(len(data.train_x), generator=generator).to(device)
        for batch in order.split(config.batch):
            logits = predictor.logits(data.train_x[batch] * scale)
            optimizer.zero_grad(set_to_none=True)
            logits.backward(weighted_bce_grad(logits, data.train_y[batch], data.positive_rate))
            optimizer.step()
        candidate = LayerPredictor(w1 * scale, w2).rounded()
        loss, recall = _heldout_loss(candidate, data)
        if report:
            report(
                f"rank {rank} epoch {epoch + 1}: held-out loss {loss:.4f}, recall@0 {recall:.3f}"
            )
        if best is None or loss < best_loss:
            best, best_loss, stale = candidate, loss, 0
        else:
            stale += 1
            if stale > config.patience:
                break
    logits = _heldout_logits(best, data.held_x)
    best.threshold = tune_threshold(logits, data.held_y, config.recall)
    best.metrics = heldout_metrics(logits, data.held_y, best.threshold)
    best.w1, best.w2 = best.w1.cpu(), best.w2.cpu()
    return best
