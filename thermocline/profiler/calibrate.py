"""Per-layer magnitude thresholds that make a silu/gelu model sparse at a target fraction.

Method: layer by layer over the calibration windows, so that each layer is calibrated on
the inputs it will see at run time (earlier layers already thresholded). The hidden states
of the calibration windows are held in memory (calib tokens x d_model). Block i runs once
with threshold 0 while hooks keep its FFN residual input and its activation h (calib tokens
x d_ff, one layer at a time); the threshold is the exact `target`-quantile (kthvalue:
torch.quantile has an input-size limit) of a sample of |h|; the thresholded block output,
the input of block i + 1, is then residual + down(h masked), the very ops of the block's
forward, without running attention again. The sample is every value when the layer has at
most `max_samples` of them, else a uniform random draw of about `max_samples` (seeded),
whose quantile is off by about 0.05% of sparsity (one standard error). A neuron is active
iff |h| > threshold, so a `target` share of |h| falls at or below it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from thermocline.models.transformer import Transformer

MAX_SAMPLES = 1 << 20  # |h| values per layer for the quantile: standard error < 0.05%


def quantile_threshold(samples: Tensor, target: float) -> float:
    """The smallest t with a `target` share of samples <= t (0 for target 0)."""
    if target <= 0:
        return 0.0
    k = min(samples.numel(), max(1, round(target * samples.numel())))
    return float(samples.kthvalue(k).values)


@torch.inference_mode()
def calibrate_thresholds(
    model: Transformer,
    windows: Tensor,
    target: float,
    batch: int,
    max_samples: int = MAX_SAMPLES,
    advance: Callable[[int], None] = lambda n: None,
    seed: int = 0,
) -> list[float]:
    """Set every `block.ffn.threshold` so that `target` of |h| is zeroed on `windows` [n, L];
    returns the thresholds. `advance` is told the tokens of each layer's pass."""
    if not model.cfg.norm_before:  # OPT's post-norm blocks are relu: nothing to calibrate
        raise ValueError("threshold calibration needs pre-norm blocks")
    device = model.embed.weight.device
    for block in model.layers:
        block.ffn.threshold = 0.0
    batches = [windows[i : i + batch].to(device) for i in range(0, len(windows), batch)]
    rope = None
    hidden = []
    for tokens in batches:
        x, rope = model.embed_tokens(tokens, 0)
        hidden.append(x)
    values = windows.numel() * model.cfg.d_ff
    per_batch = math.ceil(max_samples / len(batches)) if values > max_samples else None
    generator = torch.Generator(device).manual_seed(seed)
    thresholds = []
    for block in model.layers:
        resid, acts = [], []
        handles = [
            block.ffn_norm.register_forward_pre_hook(
                lambda m, args, out=resid: out.append(args[0])
            ),
            block.ffn.down.register_forward_pre_hook(lambda m, args, out=acts: out.append(args[0])),
        ]
        try:
            for x in hidden:
                block(x, 0, rope, None)
        finally:
            for handle in handles:
                handle.remove()
        samples = [
            h.flatten()[torch.randint(h.numel(), (per_batch,), generator=generator, device=device)]
            if per_batch is not None
            else h.flatten()
            for h in acts
        ]
        threshold = quantile_threshold(torch.cat(samples).abs().float(), target)
        del samples
        block.ffn.threshold = threshold
        # A pre-norm block returns resid + ffn(ffn_norm(resid)) and its FFN masks h as below
        # (FeedForward.activation): the same ops give the same bits as a thresholded forward.
        hidden = [
            r + block.ffn.down(h * (h.abs() > threshold)) for r, h in zip(resid, acts, strict=True)
        ]
        thresholds.append(threshold)
        advance(windows.numel())
    return thresholds
