"""Rotary position tables, with the scaling types of HF `rope_scaling`."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from thermocline.models.config import ModelConfig, RopeScaling


def _llama3(inv_freq: Tensor, s: RopeScaling) -> Tensor:
    """Llama 3.1: long wavelengths scaled by `factor`, short ones kept, a smooth ramp between."""
    wavelen = 2 * math.pi / inv_freq
    low_wavelen = s.original_max_position / s.low_freq_factor
    high_wavelen = s.original_max_position / s.high_freq_factor
    smooth = (s.original_max_position / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor
    )
    mixed = (1 - smooth) * inv_freq / s.factor + smooth * inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
    is_mid = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(is_mid, mixed, scaled)


def _yarn(dim: int, base: float, s: RopeScaling) -> tuple[Tensor, float]:
    """YaRN: interpolate low frequencies, extrapolate high ones; scale attention by mscale."""

    def correction_dim(rotations: float) -> float:
        return (
            dim
            * math.log(s.original_max_position / (rotations * 2 * math.pi))
            / (2 * math.log(base))
        )

    low = max(math.floor(correction_dim(s.beta_fast)), 0)
    high = min(math.ceil(correction_dim(s.beta_slow)), dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    extrapolate = 1 - ramp
    inv_freq = (1 / (s.factor * pos_freqs)) * (1 - extrapolate) + (1 / pos_freqs) * extrapolate
    mscale = s.attention_factor
    if mscale is None:
        mscale = 0.1 * math.log(s.factor) + 1.0 if s.factor > 1 else 1.0
    return inv_freq, mscale


def rope_tables(cfg: ModelConfig) -> tuple[Tensor, Tensor]:
    """cos and sin [max_seq_len, head_dim] in float32, rotate-half layout."""
    dim, base, s = cfg.head_dim, cfg.rope_theta, cfg.rope_scaling
    inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    positions = torch.arange(cfg.max_seq_len, dtype=torch.float32)
    mscale = 1.0
    if s is not None and s.kind == "linear":
        positions = positions / s.factor
    elif s is not None and s.kind == "llama3":
        inv_freq = _llama3(inv_freq, s)
    elif s is not None and s.kind == "yarn":
        inv_freq, mscale = _yarn(dim, base, s)
    angles = torch.outer(positions, inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos() * mscale, angles.sin() * mscale
