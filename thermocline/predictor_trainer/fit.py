"""Training one predictor of a given rank, and tuning its logit threshold on held-out tokens."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

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
        return cls(x[:-n_held], y[:-n_held], x[-n_held:], y[-n_held:])


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
    pairs: just below the ceil(recall * P)-th largest logit of the P active pairs."""
    positives = logits[mask]
    if positives.numel() == 0:  # nothing fires: predict nothing
        return float(logits.max()) if logits.numel() else 0.0
    k = math.ceil(recall * positives.numel())
    kth_largest = positives.float().kthvalue(positives.numel() - k + 1).values
    return float(torch.nextafter(kth_largest, torch.tensor(-math.inf, device=kth_largest.device)))


def heldout_metrics(logits: Tensor, mask: Tensor, threshold: float) -> dict[str, float]:
    predicted = logits > threshold
    hits, positives, chosen = (
        int((predicted & mask).sum()),
        int(mask.sum()),
        int(predicted.sum()),
    )
    return {
        "recall": hits / positives if positives else 1.0,
        "precision": hits / chosen if chosen else 1.0,
        "predicted_sparsity": 1 - chosen / mask.numel(),
        "true_sparsity": 1 - positives / mask.numel(),
    }


@torch.no_grad()
def _heldout_logits(predictor: LayerPredictor, x: Tensor, chunk: int = 8192) -> Tensor:
    return torch.cat([predictor.logits(part) for part in x.split(chunk)])


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
    device = data.train_x.device
    generator = torch.Generator().manual_seed(config.seed * 1009 + rank)
    # Train on standardized inputs (the FFN norm's weights scale features very unevenly), then
    # fold the scale into w1: logits are unchanged and the stored predictor stays w2 relu(w1 x).
    scale = data.train_x.std(0).clamp_min(1e-6).reciprocal()
    if start is None:
        init = LayerPredictor.init(data.train_x.shape[1], data.train_y.shape[1], rank, generator)
        start = LayerPredictor(init.w1.to(device) * scale, init.w2.to(device))
    w1 = (start.w1.to(device) / scale).requires_grad_()
    w2 = start.w2.to(device).clone().requires_grad_()
    predictor = LayerPredictor(w1, w2)
    optimizer = torch.optim.AdamW([w1, w2], lr=config.lr, weight_decay=config.weight_decay)
    rate = float(data.train_y.float().mean())
    best, stale = start.rounded(), 0
    best_loss = float(weighted_bce(_heldout_logits(best, data.held_x), data.held_y, rate))
    for epoch in range(epochs):
        order = torch.randperm(len(data.train_x), generator=generator).to(device)
        for batch in order.split(config.batch):
            logits = predictor.logits(data.train_x[batch] * scale)
            optimizer.zero_grad(set_to_none=True)
            logits.backward(weighted_bce_grad(logits, data.train_y[batch], rate))
            optimizer.step()
        candidate = LayerPredictor(w1 * scale, w2).rounded()
        logits = _heldout_logits(candidate, data.held_x)
        held_loss = float(weighted_bce(logits, data.held_y, rate))
        if report:
            recall = heldout_metrics(logits, data.held_y, 0.0)["recall"]
            report(
                f"rank {rank} epoch {epoch + 1}: held-out loss {held_loss:.4f}, recall@0 {recall:.3f}"
            )
        if held_loss < best_loss:
            best, best_loss, stale = candidate, held_loss, 0
        else:
            stale += 1
            if stale > config.patience:
                break
    logits = _heldout_logits(best, data.held_x)
    best.threshold = tune_threshold(logits, data.held_y, config.recall)
    best.metrics = heldout_metrics(logits, data.held_y, best.threshold)
    best.w1, best.w2 = best.w1.cpu(), best.w2.cpu()
    return best
