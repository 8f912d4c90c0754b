"""The counting pass: the (thresholded) model over the corpus with hooks on every FFN.

Forward pre-hooks on `block.ffn` (its input: what the predictor sees at run time) and on
`block.ffn.down` (the activation h, thresholds already applied by the model) do all the
work on whole batches of [batch, seq_len] windows; the lm_head is skipped since nothing
here needs logits. A neuron is active for a token when its h is non-zero: exact zeros for
the ReLU family, |h| > threshold for silu/gelu (the model zeroes the rest).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from thermocline.models.transformer import Transformer
from thermocline.profiler.shards import ShardWriter


def spread(total: int, pick: int) -> Tensor:
    """`pick` indices evenly spread over range(total), first and last included."""
    pick = min(pick, total)
    if pick <= 0:
        return torch.zeros(0, dtype=torch.long)
    return torch.linspace(0, total - 1, pick).round().long()


def run_blocks(model: Transformer, tokens: Tensor) -> Tensor:
    """The residual stream after the last block (no final norm, no lm_head)."""
    x, rope = model.embed_tokens(tokens, 0)
    for block in model.layers:
        x = block(x, 0, rope, None)
    return x


@dataclass
class Collected:
    counts: list[Tensor]  # per layer, int64 [d_ff]: tokens for which each neuron was active
    tokens: int


class _Hooks:
    """Counts active neurons in every batch; captures the rows chosen for the training shards."""

    def __init__(self, model: Transformer):
        device = model.embed.weight.device
        d_ff = model.cfg.d_ff  # float64 sums of float32 batch counts: exact integers
        self.counts = [torch.zeros(d_ff, dtype=torch.float64, device=device) for _ in model.layers]
        self.rows: Tensor | None = None  # flattened token rows of this batch to capture
        self.inputs: list[Tensor] = [torch.empty(0)] * len(model.layers)
        self.masks: list[Tensor] = [torch.empty(0)] * len(model.layers)
        self.handles = []
        for i, block in enumerate(model.layers):
            self.handles.append(block.ffn.register_forward_pre_hook(self._ffn_input(i)))
            self.handles.append(block.ffn.down.register_forward_pre_hook(self._activation(i)))

    def _ffn_input(self, i: int) -> Callable:
        def hook(module, args):
            if self.rows is not None:
                self.inputs[i] = args[0].flatten(0, 1)[self.rows].to("cpu", torch.float16)

        return hook

    def _activation(self, i: int) -> Callable:
        def hook(module, args):
            active = args[0].flatten(0, 1) != 0
            # Counting by a vector-matrix product is ~2x faster than a bool sum over tokens,
            # and exact: float32 holds integers up to 2^24 tokens per batch.
            self.counts[i] += active.new_ones(len(active), dtype=torch.float32) @ active.float()
            if self.rows is not None:
                self.masks[i] = active[self.rows].cpu()

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def train_rows(windows: int, seq_len: int, train_tokens: int) -> Tensor:
    """Tokens taken per window for the training shards: whole windows spread over the corpus,
    the last one cut so that exactly min(train_tokens, all tokens) rows are taken."""
    take = torch.zeros(windows, dtype=torch.long)
    chosen = spread(windows, -(-train_tokens // seq_len))
    take[chosen] = seq_len
    if len(chosen) and train_tokens < len(chosen) * seq_len:
        take[chosen[-1]] = train_tokens - (len(chosen) - 1) * seq_len
    return take


@torch.inference_mode()
def collect(
    model: Transformer,
    windows: Tensor,
    batch: int,
    take: Tensor,
    writer: ShardWriter | None,
    advance: Callable[[int], None] = lambda n: None,
) -> Collected:
    """Counts over all `windows` [n, seq_len]; `take[w]` leading tokens of window w go to `writer`."""
    device, seq_len = model.embed.weight.device, windows.shape[1]
    hooks = _Hooks(model)
    try:
        for start in range(0, len(windows), batch):
            chunk = windows[start : start + batch]
            n_take = take[start : start + len(chunk)]
            hooks.rows = None
            if writer is not None and n_take.any():
                offsets = torch.arange(seq_len)
                rows = torch.arange(len(chunk)).unsqueeze(1) * seq_len + offsets
                hooks.rows = rows[offsets < n_take.unsqueeze(1)].to(device)
            run_blocks(model, chunk.to(device))
            if hooks.rows is not None:
                writer.add(hooks.inputs, hooks.masks)
            advance(chunk.numel())
    finally:
        hooks.remove()
    return Collected([c.round().long().cpu() for c in hooks.counts], windows.numel())
