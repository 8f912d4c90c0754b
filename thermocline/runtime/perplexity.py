"""Perplexity over non-overlapping windows of a text (batched, no per-token Python)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from rich.progress import Progress

from thermocline.errors import ThermoclineError
from thermocline.models.transformer import Transformer


@dataclass
class PerplexityResult:
    perplexity: float
    tokens: int  # tokens scored (each window's first token has no context and is not scored)
    windows: int
    window: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


@torch.inference_mode()
def perplexity(
    model: Transformer,
    ids: list[int],
    window: int = 512,
    batch: int = 4,
    max_tokens: int | None = None,
    progress: bool = False,
) -> PerplexityResult:
    """exp(mean NLL) over windows ids[i*window:(i+1)*window]; a trailing partial window is dropped."""
    if window < 2:
        raise ThermoclineError("the perplexity window must be at least 2 tokens")
    if window > model.cfg.max_seq_len:
        raise ThermoclineError(
            f"window {window} exceeds the model's context of {model.cfg.max_seq_len}"
        )
    if max_tokens is not None:
        ids = ids[:max_tokens]
    n_windows = len(ids) // window
    if n_windows == 0:
        raise ThermoclineError(f"the text has {len(ids)} tokens, fewer than one window of {window}")
    windows = torch.tensor(ids[: n_windows * window]).view(n_windows, window)
    total_nll, start = 0.0, time.perf_counter()
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("perplexity", total=n_windows)
        for chunk in windows.split(batch):
            logits = model(chunk).float()
            nll = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                chunk[:, 1:].reshape(-1),
                reduction="sum",
            )
            total_nll += float(nll)
            bar.advance(task, len(chunk))
    scored = n_windows * (window - 1)
    return PerplexityResult(
        math.exp(total_nll / scored), scored, n_windows, window, time.perf_counter() - start
    )
