"""Synthetic profiles for the predictor trainer, written exactly as the shard contract says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

from thermocline.models.config import ModelConfig


def tiny_config(
    n_layers: int = 2, d_model: int = 32, d_ff: int = 64, activation: str = "relu"
) -> ModelConfig:
    return ModelConfig(
        arch="llama",
        vocab_size=260,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=4,
        n_kv_heads=2,
        d_ff=d_ff,
        activation=activation,
    )


def planted_layer(
    n: int, d_model: int, d_ff: int, inner_rank: int, seed: int
) -> tuple[Tensor, Tensor]:
    """Inputs x and the rule "neuron j active iff a_j . x > b_j" with A = B C of rank inner_rank;
    the offsets b make neurons fire at different rates (a skewed layer)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_model, generator=gen)
    a = torch.randn(d_ff, inner_rank, generator=gen) @ torch.randn(
        inner_rank, d_model, generator=gen
    )
    a = a / a.norm(dim=1, keepdim=True)
    offsets = 0.8 * torch.randn(d_ff, generator=gen)
    return x.half(), (x @ a.T > offsets)


def write_profile(
    path: Path,
    config: ModelConfig,
    layers: list[tuple[Tensor, Tensor]],
    shard_tokens: int = 1000,
    thresholds: list[float] | None = None,
) -> Path:
    """profile.json and train/shard_*.safetensors for per-layer (inputs, mask bool) pairs."""
    n = len(layers[0][0])
    (path / "train").mkdir(parents=True)
    shards = []
    for k, start in enumerate(range(0, n, shard_tokens)):
        tensors = {}
        for i, (x, mask) in enumerate(layers):
            rows = slice(start, start + shard_tokens)
            packed = np.packbits(mask[rows].numpy(), axis=-1, bitorder="little")
            tensors[f"layers.{i}.inputs"] = x[rows].half().contiguous()
            tensors[f"layers.{i}.mask"] = torch.from_numpy(packed)
        shards.append(f"shard_{k:05d}.safetensors")
        save_file(tensors, str(path / "train" / shards[-1]))
    thresholds = thresholds or [0.0] * config.n_layers
    meta = {
        "format": "thermocline-profile",
        "version": 1,
        "model": {"name": "tiny", "digest": "0" * 64, "config": config.to_dict()},
        "corpus": "synthetic",
        "split": "calibration",
        "seq_len": 64,
        "tokens": n,
        "target_sparsity": None,
        "train_tokens": n,
        "shards": shards,
        "layers": [
            {
                "sparsity": 1 - float(m.float().mean()),
                "top10_share": 0.0,
                "top20_share": 0.0,
                "gini": 0.0,
                "threshold": t,
            }
            for (_, m), t in zip(layers, thresholds, strict=True)
        ],
        "seconds": 0.0,
    }
    (path / "profile.json").write_text(json.dumps(meta))
    activations = {
        f"layers.{i}.counts": m.sum(0).to(torch.int64) for i, (_, m) in enumerate(layers)
    }
    if not config.zero_sparse:
        activations |= {
            f"layers.{i}.threshold": torch.tensor(t, dtype=torch.float32)
            for i, t in enumerate(thresholds)
        }
    save_file(activations, str(path / "activations.safetensors"))
    return path


@torch.no_grad()
def profile_model(model, path: Path, tokens: Tensor, sparsity: float = 0.5) -> Path:
    """A profile of a dense model on `tokens` [batch, seq]: per layer, the median-style magnitude
    threshold for `sparsity`, and the FFN inputs and masks as training shards."""
    inputs, magnitudes = {}, {}
    hooks = [
        hook
        for i, block in enumerate(model.layers)
        for hook in (
            block.ffn.register_forward_pre_hook(
                lambda m, a, i=i: inputs.__setitem__(i, a[0].flatten(0, 1))
            ),
            block.ffn.down.register_forward_pre_hook(
                lambda m, a, i=i: magnitudes.__setitem__(i, a[0].flatten(0, 1).abs())
            ),
        )
    ]
    model(tokens)
    for hook in hooks:
        hook.remove()
    layers, thresholds = [], []
    for i in range(model.cfg.n_layers):
        h = magnitudes[i]
        thresholds.append(float(h.flatten().kthvalue(int(sparsity * h.numel())).values))
        layers.append((inputs[i].half(), h > thresholds[-1]))
    return write_profile(
        path, model.cfg, layers, shard_tokens=len(layers[0][0]) // 2 + 1, thresholds=thresholds
    )
