"""Pure-torch neuron-sparse FFN: the ground truth both kernels are tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from thermocline.runtime.kernels import ACTIVATIONS


def check_activation(activation: str, gated: bool) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown FFN activation {activation!r}; one of {ACTIVATIONS}")
    if activation == "drelu" and not gated:
        raise ValueError("drelu needs a gate and an up projection")


def activate(z: torch.Tensor, activation: str, fatrelu_threshold: float = 0.0) -> torch.Tensor:
    """The activation applied to one projection (the gate, or fc1 in non-gated FFNs)."""
    if activation in ("relu", "drelu"):
        return F.relu(z)
    if activation == "fatrelu":
        return torch.where(z > fatrelu_threshold, z, 0.0)
    if activation == "silu":
        return F.silu(z)
    if activation == "gelu":
        return F.gelu(z)
    return F.gelu(z, approximate="tanh")


def sparse_ffn_reference(
    x: torch.Tensor,
    gate: torch.Tensor | None,
    up: torch.Tensor,
    down_t: torch.Tensor,
    active: torch.Tensor,
    activation: str,
    threshold: float = 0.0,
    fatrelu_threshold: float = 0.0,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = sum over active neurons j of h_j * down_t[j], in fp32; x [d] or [B, d].

    Gated (LLaMA): h = act(gate x) * (up x), drelu: relu(gate x) * relu(up x).
    Non-gated (OPT): gate is None, up is fc1 and h = act(up x + bias); the caller adds fc2's bias.
    A threshold t > 0 zeroes h where |h| <= t (calibrated sparsity for silu/gelu models).
    """
    check_activation(activation, gate is not None)
    idx = active.long()
    x = x.float()
    z = F.linear(x, up[idx].float(), None if bias is None else bias[idx].float())
    if gate is None:
        h = activate(z, activation, fatrelu_threshold)
    else:
        h = activate(F.linear(x, gate[idx].float()), activation, fatrelu_threshold)
        h = h * (F.relu(z) if activation == "drelu" else z)
    if threshold > 0:
        h = torch.where(h.abs() > threshold, h, 0.0)
    return h @ down_t[idx].float()
