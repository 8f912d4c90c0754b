"""Tiny profiles for the profiler tests: small corpora, few tokens, one window per batch."""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_models import tiny_llama, tiny_opt
from torch import Tensor

from thermocline.models import build_model, load_checkpoint
from thermocline.profiler import ProfileConfig, apply_thresholds
from thermocline.profiler.datasets_corpus import corpus_tokens

CORPUS = "wikitext-2"


def tiny_checkpoint(path: Path, activation: str) -> Path:
    if activation == "opt":
        return tiny_opt(path)[0]
    return tiny_llama(path, activation)[0]


def small_config(**overrides) -> ProfileConfig:
    base = dict(
        tokens=1024,
        seq_len=64,
        batch=1,
        train_tokens=256,
        shard_tokens=128,
        calib_tokens=1024,
        progress=False,
    )
    return ProfileConfig(**{**base, **overrides})


def profiled_windows(checkpoint: Path, config: ProfileConfig, corpus: str = CORPUS) -> Tensor:
    """The [n, seq_len] windows the profiler ran, rebuilt independently of it."""
    ids = corpus_tokens(corpus, config.split, load_checkpoint(checkpoint).tokenizer, config.tokens)
    n = len(ids) // config.seq_len
    return ids[: n * config.seq_len].view(n, config.seq_len)


def thresholded_model(checkpoint: Path, profile_dir: Path):
    model = build_model(load_checkpoint(checkpoint), torch.float32)
    apply_thresholds(model, profile_dir)
    return model
