"""Timing of batch-1 decode and prefill, and the roofline metric gpt-fast reports.

"Bandwidth achieved" = bytes of weights read per decoded token x tokens/s: how close decode
comes to the memory bandwidth that bounds it. For a sparse model the bytes are those of the
neurons actually computed (plus the predictors), so the figure stays honest.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from thermocline.errors import ThermoclineError
from thermocline.models.transformer import Transformer
from thermocline.runtime.generate import decode_one, prefill
from thermocline.runtime.sparse_ffn import SparseFeedForward


@dataclass
class DecodeTiming:
    name: str
    dtype: str
    decode_tokens_per_s: float
    prefill_tokens_per_s: float
    bytes_per_token: float
    new_tokens: int
    prompt_tokens: int
    sparsity: float | None = None  # realized FFN sparsity during the timed decode
    recall: float | None = None  # predictor recall against the true active set
    true_sparsity: float | None = None  # share of neurons the thresholds zero (no predictor)
    decode_runs: list[float] | None = None  # decode tokens/s of each round, when several

    @property
    def bandwidth_gb_s(self) -> float:
        return self.bytes_per_token * self.decode_tokens_per_s / 1e9

    def as_dict(self) -> dict:
        return {**asdict(self), "bandwidth_gb_s": self.bandwidth_gb_s}


def sparse_ffns(model: Transformer) -> list[SparseFeedForward]:
    """Every sparse FFN of the model, wherever it sits (a block's ffn, or inside a wrapper)."""
    return [m for m in model.modules() if isinstance(m, SparseFeedForward)]


def decode_bytes_per_token(model: Transformer) -> float:
    """Weights read per decode step: dense parameters plus what the sparse FFNs computed."""
    return model.weight_bytes_per_token() + sum(f.bytes_per_token() for f in sparse_ffns(model))


def reset_stats(model: Transformer) -> None:
    for ffn in sparse_ffns(model):
        ffn.stats = type(ffn.stats)()


def time_decode(
    model: Transformer, prompt: list[int], new_tokens: int = 128, warmup: int = 8
) -> tuple[float, list[int]]:
    """(decode tokens/s, tokens decoded): greedy batch-1 decode after `prompt`, EOS ignored.
    The sparse FFNs' stats count the timed tokens alone."""
    context = model.cfg.max_seq_len
    if len(prompt) + new_tokens + warmup > context:
        raise ThermoclineError(
            f"prompt ({len(prompt)}) + {warmup} warm-up + {new_tokens} new tokens exceed the "
            f"model's context of {context} tokens: lower --new-tokens"
        )
    cache = model.new_cache(1, len(prompt) + new_tokens + warmup)
    logits = prefill(model, prompt, cache)
    position, tokens = len(prompt), list(prompt)
    for _ in range(warmup):
        tokens.append(int(logits.argmax()))
        logits = decode_one(model, tokens[-1], position, cache)
        position += 1
    reset_stats(model)
    start = time.perf_counter()
    for _ in range(new_tokens):
        tokens.append(int(logits.argmax()))
        logits = decode_one(model, tokens[-1], position, cache)
        position += 1
    return new_tokens / (time.perf_counter() - start), tokens


def time_prefill(model: Transformer, tokens: list[int], prefill_tokens: int = 256) -> float:
    """Prefill tokens/s over `prefill_tokens` tokens repeated from `tokens` (a 5-token prompt
    times nothing), fewer if the model's context is shorter."""
    prefill_tokens = min(prefill_tokens, model.cfg.max_seq_len)
    long_prompt = (tokens * (prefill_tokens // len(tokens) + 1))[:prefill_tokens]
    long_cache = model.new_cache(1, prefill_tokens)
    prefill(model, long_prompt, long_cache)  # warm-up at this shape
    start = time.perf_counter()
    prefill(model, long_prompt, long_cache)
    return prefill_tokens / (time.perf_counter() - start)


def realized_sparsity(model: Transformer) -> float | None:
    ffns = sparse_ffns(model)
    if not ffns or ffns[0].predictor is None:
        return None
    return sum(f.stats.sparsity for f in ffns) / len(ffns)


@torch.inference_mode()
def measure_truth(model: Transformer, tokens: list[int]) -> tuple[float | None, float | None]:
    """(recall, true sparsity) over one pass of `tokens`: the share of truly active neurons the
    predictors found (None without predictors), and the share of neurons the thresholds zero
    (None without sparse FFNs)."""
    ffns = sparse_ffns(model)
    if not ffns:
        return None, None
    reset_stats(model)
    for f in ffns:
        f.measure_recall = True
    try:
        model(torch.tensor([tokens]))
    finally:
        for f in ffns:
            f.measure_recall = False
    stats = [f.stats for f in ffns]
    truly_active = sum(s.truly_active for s in stats)
    recall = None
    if ffns[0].predictor is not None:
        recall = sum(s.found for s in stats) / max(1, truly_active)
    return recall, 1 - truly_active / max(1, sum(s.neurons for s in stats))


def bench_model(
    name: str, dtype: str, model: Transformer, prompt: list[int], new_tokens: int
) -> DecodeTiming:
    decode, tokens = time_decode(model, prompt, new_tokens)
    # Before prefill and the recall pass add their tokens to the stats.
    sparsity, bytes_per_token = realized_sparsity(model), decode_bytes_per_token(model)
    return DecodeTiming(
        name,
        dtype,
        decode,
        time_prefill(model, tokens),
        bytes_per_token,
        new_tokens,
        len(prompt),
        sparsity,
        *measure_truth(model, tokens),
    )
