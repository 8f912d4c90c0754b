"""Prefill, decode and sampling on any engine model (dense or sparse), gpt-fast style."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from thermocline.errors import ThermoclineError
from thermocline.models.tokenizer import StreamDecoder, TextTokenizer
from thermocline.models.transformer import KVCache, Transformer


@dataclass
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0  # 1: no nucleus cut
    seed: int | None = None
    stop: list[str] = field(default_factory=list)  # stop strings (never emitted)
    stop_on_eos: bool = True

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ThermoclineError("max_new_tokens must be >= 0")
        if self.temperature < 0:
            raise ThermoclineError("temperature must be >= 0")
        if self.top_k < 0:
            raise ThermoclineError("top_k must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ThermoclineError("top_p must be in (0, 1]")


def sample(logits: Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One token id from the last position's logits [vocab]."""
    if params.temperature == 0:
        return int(logits.argmax())
    logits = logits.float() / params.temperature
    if params.top_k:
        kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = sorted_probs.cumsum(0) - sorted_probs >= params.top_p
        probs = probs.scatter(0, order, sorted_probs.masked_fill(drop, 0))
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass
class Completion:
    """What a finished generation produced, for APIs that report usage."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "length"  # "stop" on EOS or a stop string


class StopMatcher:
    """Holds back text that may be the start of a stop string; reports when one completes."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, whether a stop string was reached)."""
        self.pending += text
        hits = [self.pending.find(s) for s in self.stops if s in self.pending]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        keep = max(
            (k for s in self.stops for k in range(1, len(s)) if self.pending.endswith(s[:k])),
            default=0,
        )
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(out) :]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


@torch.inference_mode()
def prefill(model: Transformer, tokens: list[int], cache: KVCache, start: int = 0) -> Tensor:
    """Run the prompt through the model; logits of its last position."""
    return model(torch.tensor([tokens]), start, cache, last_only=True)[0, -1]


@torch.inference_mode()
def decode_one(model: Transformer, token: int, position: int, cache: KVCache) -> Tensor:
    return model(torch.tensor([[token]]), position, cache)[0, -1]


def generate_tokens(
    model: Transformer,
    prompt: list[int],
    params: SamplingParams,
    eos_ids: list[int],
    cache: KVCache | None = None,
) -> Iterator[int]:
    """Token ids as they are produced; stops at max_new_tokens or (optionally) EOS."""
    if not prompt:
        raise ThermoclineError("the prompt is empty")
    total = len(prompt) + params.max_new_tokens
    if total > model.cfg.max_seq_len:
        raise ThermoclineError(
            f"prompt ({len(prompt)}) + new tokens ({params.max_new_tokens}) exceed the "
            f"model's context of {model.cfg.max_seq_len} tokens"
        )
    if params.max_new_tokens == 0:
        return
    cache = cache or model.new_cache(1, total)
    generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
    logits = prefill(model, prompt, cache)
    position = len(prompt)
    for step in range(params.max_new_tokens):
        token = sample(logits, params, generator)
        if params.stop_on_eos and token in eos_ids:
            return
        yield token
        if step + 1 < params.max_new_tokens:
            logits = decode_one(model, token, position, cache)
            position += 1


def stream_text(
    model: Transformer,
    tokenizer: TextTokenizer,
    prompt: list[int],
    params: SamplingParams,
    result: Completion | None = None,
) -> Iterator[str]:
    """Text pieces as they are produced, honouring stop strings; fills `result` when done."""
    result = result if result is not None else Completion()
    result.prompt_tokens = len(prompt)
    decoder, stops = StreamDecoder(tokenizer), StopMatcher(params.stop)
    n_tokens = 0
    for token in generate_tokens(model, prompt, params, tokenizer.eos_ids):
        n_tokens += 1
        result.completion_tokens = n_tokens  # kept current: a cancelled stream reports it too
        piece, stopped = stops.feed(decoder.push(token))
        if piece:
            result.text += piece
            yield piece
        if stopped:
            result.completion_tokens, result.finish_reason = n_tokens, "stop"
            return
    tail = stops.flush()
    if tail:
        result.text += tail
        yield tail
    result.completion_tokens = n_tokens
    result.finish_reason = "length" if n_tokens == params.max_new_tokens else "stop"
