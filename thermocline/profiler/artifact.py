"""The profile/ artifact: activations.safetensors + profile.json (+ train/ shards, a plot)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from thermocline.errors import ThermoclineError
from thermocline.models.config import ModelConfig

FORMAT, VERSION = "thermocline-profile", 1
ACTIVATIONS, META, PLOT = "activations.safetensors", "profile.json", "activations.png"


@dataclass
class Profile:
    path: Path
    meta: dict[str, Any]  # profile.json
    counts: list[Tensor]  # per layer, int64 [d_ff]: tokens for which each neuron was active
    thresholds: list[float]  # per layer magnitude threshold on h (0 for the ReLU family)

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.meta["model"]["config"])

    @property
    def tokens(self) -> int:
        return int(self.meta["tokens"])

    @property
    def frequencies(self) -> list[Tensor]:
        """Per layer, the share of profiled tokens for which each neuron was active."""
        return [c.double() / self.tokens for c in self.counts]


def write_activations(path: Path, counts: list[Tensor], thresholds: list[float] | None) -> None:
    tensors = {f"layers.{i}.counts": c.to(torch.int64).contiguous() for i, c in enumerate(counts)}
    for i, t in enumerate(thresholds or []):
        tensors[f"layers.{i}.threshold"] = torch.tensor(t, dtype=torch.float32)
    save_file(tensors, str(path))


def read_meta(directory: Path) -> dict[str, Any]:
    path = directory / META
    fix = f"run `thermocline profile --out {directory}`"
    if not path.is_file():
        raise ThermoclineError(f"{directory} is not a profile ({META} missing); {fix}")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ThermoclineError(f"{path} is corrupt ({error}); {fix}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ThermoclineError(f"{path} is not a thermocline profile; {fix}")
    if meta.get("version") != VERSION:
        raise ThermoclineError(
            f"{path} has version {meta.get('version')!r}, expected {VERSION}; {fix}"
        )
    return meta


def load_profile(directory: str | Path) -> Profile:
    """The profile in `directory`, checked: counts for every layer, thresholds where needed."""
    directory = Path(directory)
    meta = read_meta(directory)
    fix = f"re-run `thermocline profile --force --out {directory}`"
    try:
        config = ModelConfig.from_dict(meta["model"]["config"])
        tensors = load_file(str(directory / ACTIVATIONS))
        counts = [tensors[f"layers.{i}.counts"] for i in range(config.n_layers)]
        if config.zero_sparse:
            thresholds = [0.0] * config.n_layers
        else:
            thresholds = [float(tensors[f"layers.{i}.threshold"]) for i in range(config.n_layers)]
    except (OSError, SafetensorError, KeyError, TypeError, ThermoclineError) as error:
        raise ThermoclineError(
            f"profile {directory} is incomplete or corrupt ({error}); {fix}"
        ) from None
    bad = [i for i, c in enumerate(counts) if tuple(c.shape) != (config.d_ff,)]
    if bad:
        raise ThermoclineError(
            f"profile {directory}: counts of layers {bad[:5]} are not [d_ff]; {fix}"
        )
    return Profile(directory, meta, counts, thresholds)
