"""The neuron-sparse FFN: a predictor picks the active neurons, hot ones run where the
placement put them (the GPU, Triton), cold ones on the CPU from memory-mapped weights.

Neurons are in the artifact's stored order (hot first). The math is the same on every path:
h_j is computed only for predicted-active j (and zeroed below the layer's threshold); the
masked dense path for many tokens gives the same result as the per-token sparse kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thermocline.converter.reader import NeuronBlock
from thermocline.models.config import ModelConfig
from thermocline.models.transformer import ffn_activation

# tokens [N, d_model] -> active mask [N, d_ff], stored order
MaskPredictor = Callable[[Tensor], Tensor]
NeuronExecutor = Callable[[Tensor, Tensor], Tensor]  # (x [d], active ids) -> y [d] fp32


@dataclass
class SparsityStats:
    tokens: int = 0
    computed: int = 0  # neuron evaluations done (predicted active)
    # Down rows read: the fused CPU step counts those of the neurons the threshold kept; the
    # other paths count every computed neuron's (the Triton kernel skips the same rows).
    down_rows: int = 0
    neurons: int = 0  # neuron evaluations a dense FFN would do
    truly_active: int = 0  # with measure_recall: neurons really active (|h| above threshold)
    found: int = 0  # with measure_recall: really active and computed

    @property
    def recall(self) -> float:
        return self.found / self.truly_active if self.truly_active else 1.0

    @property
    def sparsity(self) -> float:
        return 1 - self.computed / self.neurons if self.neurons else 0.0


class SparseFeedForward(nn.Module):
    """Drop-in for FeedForward in a Transformer block."""

    def __init__(
        self,
        cfg: ModelConfig,
        hot: NeuronBlock,
        cold: NeuronBlock,
        threshold: float,
        predictor: MaskPredictor | None,
        predictor_bytes: int,
        hot_executor: NeuronExecutor | None,
        cold_executor: NeuronExecutor | None,
        down_bias: Tensor | None = None,
        hot_device: torch.device | str = "cpu",
        dense_min_tokens: int = 2,
    ):
        super().__init__()
        self.cfg, self.hot, self.cold = cfg, hot, cold
        self.threshold, self.predictor, self.predictor_bytes = threshold, predictor, predictor_bytes
        # Plain tensors, not parameters: weights live in the artifact's memory map.
        self.down_bias = None if down_bias is None else down_bias.detach()
        self.hot_executor, self.cold_executor = hot_executor, cold_executor
        self.hot_device = torch.device(hot_device)
        # The dense mode's hot ids, every token the same: kept where the hot block is.
        self.every_hot = torch.arange(hot.n, device=self.hot_device)
        self.dense_min_tokens = dense_min_tokens  # from this many tokens on, masked dense is faster
        self.stats = SparsityStats()
        self.measure_recall = False  # compare the predictor with the true active set (slow)

    def forward(self, x: Tensor) -> Tensor:
        tokens = x.reshape(-1, x.shape[-1])
        mask = None
        if self.predictor is not None:
            # Once to the CPU, where the cold ids are needed and the counts kept: from a GPU
            # predictor, each step below would wait for the device on its own.
            mask = self.predictor(tokens).cpu()
        self.stats.tokens += tokens.shape[0]
        self.stats.neurons += tokens.shape[0] * self.cfg.d_ff
        computed = int(mask.sum()) if mask is not None else tokens.shape[0] * self.cfg.d_ff
        self.stats.computed += computed
        self.stats.down_rows += computed
        if self.measure_recall:
            truth = self.true_mask(tokens)
            self.stats.truly_active += int(truth.sum())
            self.stats.found += int((truth & mask).sum() if mask is not None else truth.sum())
        if tokens.shape[0] >= self.dense_min_tokens:
            y = self._masked_dense(tokens, mask)
        else:
            # Without a predictor (the dense mode) the same kernels run over every neuron.
            if mask is None:
                mask = torch.ones(tokens.shape[0], self.cfg.d_ff, dtype=torch.bool)
            y = torch.stack(
                [self._sparse_token(t, m) for t, m in zip(tokens.float(), mask, strict=True)]
            )
        y = y.to(x.device)
        if self.down_bias is not None:
            y = y + self.down_bias.to(y.device)
        return y.to(x.dtype).view(x.shape)

    def bytes_per_token(self) -> float:
        """Weight bytes read per token so far: the computed neurons' gate and up rows, the down
        rows read, and the predictor. Before any token: every row of every neuron."""
        block = next(b for b in (self.hot, self.cold) if b.n)

        def row_bytes(t: Tensor | None) -> int:
            return 0 if t is None else t.element_size() * t.shape[1]

        tokens = self.stats.tokens
        computed = self.stats.computed / tokens if tokens else self.cfg.d_ff
        down_rows = self.stats.down_rows / tokens if tokens else self.cfg.d_ff
        predictor = self.predictor_bytes if self.predictor is not None else 0
        return (
            computed * (row_bytes(block.gate) + row_bytes(block.up))
            + down_rows * row_bytes(block.down_t)
            + predictor
        )

    def _sparse_token(self, x: Tensor, mask: Tensor) -> Tensor:
        """One token (x where its block runs, the mask on the CPU): launch the hot neurons
        (asynchronous on a GPU), compute the cold ones on the CPU meanwhile, then add the two
        partial outputs where the block runs (one copy, of the other side's part)."""
        n_hot = self.hot.n
        active = mask.nonzero().squeeze(1)
        split = int(torch.searchsorted(active, n_hot))  # active ids are sorted: hot ids come first
        hot_ids, cold_ids = active[:split], active[split:] - n_hot
        # The CPU's input before the launch: from a GPU-resident block, a copy queued after
        # the hot kernels would wait for them, and the two halves would not overlap.
        x_cpu = x.cpu()
        y_hot = None
        if n_hot and len(hot_ids):
            y_hot = self.hot_executor(
                x.to(self.hot_device, non_blocking=True),
                self.every_hot if self.predictor is None else hot_ids.to(self.hot_device),
            )
        if self.cold.n and len(cold_ids):
            y = self.cold_executor(x_cpu, cold_ids)
        else:
            y = torch.zeros(x.shape)
        y = y.to(x.device)
        return y if y_hot is None else y + y_hot.to(x.device)

    def _block_activations(self, block: NeuronBlock, tokens: Tensor) -> Tensor:
        """h [N, n] of every neuron of a block, zeroed at or below the layer's threshold."""
        x = tokens.to(block.up.device, block.up.dtype)
        gate = F.linear(x, block.gate) if block.gate is not None else None
        h = ffn_activation(self.cfg, gate, F.linear(x, block.up, block.up_bias)).float()
        return h * (h.abs() > self.threshold) if self.threshold > 0 else h

    def true_mask(self, tokens: Tensor) -> Tensor:
        """The neurons that really are active (the oracle a predictor approximates)."""
        return torch.cat(
            [(self._block_activations(b, tokens) != 0).cpu() for b in (self.hot, self.cold)], dim=1
        )

    def _masked_dense(self, tokens: Tensor, mask: Tensor | None) -> Tensor:
        """All neurons by GEMM, then the predicted mask applied: for prefill. As in
        _sparse_token, the CPU's input is copied first and the hot block's GEMMs are queued
        before the cold block's run, so that a GPU's part and the CPU's overlap."""
        tokens_cpu = tokens.cpu()
        parts, start = [], 0
        for block in (self.hot, self.cold):
            if block.n:
                h = self._block_activations(block, tokens_cpu if block.up.is_cpu else tokens)
                if mask is not None:
                    h = h * mask[:, start : start + block.n].to(h.device)
                parts.append((h.to(block.down_t.dtype) @ block.down_t).float())
                start += block.n
        return sum((part.cpu() for part in parts), torch.zeros(tokens.shape))
