"""Timing of batch-1 decode and prefill, and the roofline metric gpt-fast reports.

"Bandwidth achieved" = bytes of weights read per decoded token x tokens/s: how close decode
comes to the memory bandwidth that bounds it. For a sparse model the bytes are those of the
neurons actually computed, so the figure stays honest.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from thermocline.models.transformer import KVCache, Transformer
from thermocline.runtime.generate import decode_one, prefill


@dataclass
class DecodeTiming:
    name: str
    dtype: str
    decode_tokens_per_s: float
    prefill_tokens_per_s: float
    bytes_per_token: int
    new_tokens: int
    prompt_tokens: int

    @property
    def bandwidth_gb_s(self) -> float:
        return self.bytes_per_token * self.decode_tokens_per_s / 1e9

    def as_dict(self) -> dict:
        return {**asdict(self), "bandwidth_gb_s": self.bandwidth_gb_s}


def time_decode(
    model: Transformer, prompt: list[int], new_tokens: int = 128, prefill_tokens: int = 256, warmup: int = 8
) -> tuple[float, float]:
    """(decode tokens/s, prefill tokens/s): greedy batch-1 decode after `prompt`, EOS ignored;
    prefill timed separately on `prefill_tokens` tokens (prompts of 5 tokens time nothing)."""
    dtype = model.lm_head.weight.dtype
    cache = KVCache(model.cfg, 1, len(prompt) + new_tokens + warmup, dtype)
    logits = prefill(model, prompt, cache)
    position = len(prompt)
    for _ in range(warmup):
        logits = decode_one(model, int(logits.argmax()), position, cache)
        position += 1
    start = time.perf_counter()
    for _ in range(new_tokens):
        logits = decode_one(model, int(logits.argmax()), position, cache)
        position += 1
    decode = new_tokens / (time.perf_counter() - start)
    long_prompt = (prompt * (prefill_tokens // len(prompt) + 1))[:prefill_tokens]
    long_cache = KVCache(model.cfg, 1, prefill_tokens, dtype)
    prefill(model, long_prompt, long_cache)  # warm-up at this shape
    start = time.perf_counter()
    prefill(model, long_prompt, long_cache)
    return decode, prefill_tokens / (time.perf_counter() - start)
