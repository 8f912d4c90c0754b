"""Tiny synthetic inputs for the placement tests: model configs, profiles, predictors, hardware."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from thermocline.models.config import ModelConfig
from thermocline.placement_solver.hardware import HardwareProfile
from thermocline.placement_solver.inputs import ActivationProfile


def tiny_config(n_layers: int = 3, d_ff: int = 16, d_model: int = 8, **overrides) -> ModelConfig:
    fields = dict(
        arch="llama",
        vocab_size=32,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=2,
        n_kv_heads=1,
        d_ff=d_ff,
        activation="relu",
    )
    return ModelConfig(**(fields | overrides))


def power_law_counts(
    rng: np.random.Generator, n_layers: int, d_ff: int, tokens: int
) -> list[np.ndarray]:
    """Counts with a heavy head, neurons shuffled so that ids do not follow impact."""
    layers = []
    for _ in range(n_layers):
        weights = rng.pareto(1.5, d_ff) + 1e-3
        frequency = np.minimum(weights / weights.max(), 1.0)
        layers.append(rng.permutation(np.round(frequency * tokens).astype(np.int64)))
    return layers


def tiny_profile(config: ModelConfig, counts: list[np.ndarray], tokens: int) -> ActivationProfile:
    return ActivationProfile(
        "tiny", "digest0123456789", config, tokens, counts, "synthetic", "train"
    )


def write_profile(
    directory: Path,
    config: ModelConfig,
    counts: list[np.ndarray],
    tokens: int,
    digest: str = "digest0123456789",
) -> Path:
    """The profiler's artifact layout (activations.safetensors + profile.json)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file(
        {f"layers.{i}.counts": c for i, c in enumerate(counts)},
        str(directory / "activations.safetensors"),
    )
    meta = {
        "format": "thermocline-profile",
        "version": 1,
        "model": {"name": "tiny", "digest": digest, "config": config.to_dict()},
        "corpus": "synthetic",
        "split": "train",
        "tokens": tokens,
        "layers": [
            {"sparsity": 0.5, "top10_share": 0.3, "top20_share": 0.5, "gini": 0.4} for _ in counts
        ],
    }
    (directory / "profile.json").write_text(json.dumps(meta))
    return directory


def write_predictors(directory: Path, ranks: list[int], digest: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": "thermocline-predictors",
        "version": 1,
        "layers": [{"rank": r, "threshold": 0.0, "recall": 0.99} for r in ranks],
    }
    if digest:
        meta["model"] = {"digest": digest}
    (directory / "predictors.json").write_text(json.dumps(meta))
    return directory


def gpu_hardware(sync_latency_us: float = 0.005, memory: int = 1 << 30) -> HardwareProfile:
    """A GPU whose overhead is small enough that C_l varies on tiny models."""
    return HardwareProfile(
        name="test-gpu",
        cpu_bandwidth_gbps=50.0,
        gpu_name="test",
        gpu_memory_bytes=memory,
        gpu_bandwidth_gbps=1000.0,
        pcie_h2d_gbps=25.0,
        pcie_d2h_gbps=25.0,
        launch_latency_us=0.0,
        sync_latency_us=sync_latency_us,
    )
