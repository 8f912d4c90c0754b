"""Read the placement's inputs: the profiler's activation counts and the predictors' sizes.

The solver only needs, per layer, how often each neuron fired (impact = count / tokens) and,
per predictor, its rank; both are checked against the model config the profile carries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from thermocline.errors import ThermoclineError
from thermocline.models.config import ModelConfig

PROFILE_FORMAT = "thermocline-profile"
PREDICTORS_FORMAT = "thermocline-predictors"


@dataclass
class ActivationProfile:
    model_name: str
    model_digest: str
    config: ModelConfig
    tokens: int  # tokens the counts were taken over
    counts: list[np.ndarray]  # per layer, int64 [d_ff]: tokens each neuron was active for
    corpus: str = ""
    split: str = ""

    def __post_init__(self) -> None:
        check_counts(self.counts, self.tokens, self.config, self.model_name)

    def impacts(self) -> list[np.ndarray]:
        """Per layer, each neuron's activation frequency: the solver's impact."""
        return [layer.astype(np.float64) / self.tokens for layer in self.counts]


def check_counts(counts: list[np.ndarray], tokens: int, config: ModelConfig, model: str) -> None:
    """Raise a ThermoclineError unless `counts` fit `config` and `tokens`."""
    fix = "re-run `thermocline profile` for this model"
    if tokens <= 0:
        raise ThermoclineError(f"profile of {model} saw {tokens} tokens; {fix}")
    if len(counts) != config.n_layers:
        raise ThermoclineError(
            f"profile has counts for {len(counts)} layers but {model} has {config.n_layers}; {fix}"
        )
    for i, layer in enumerate(counts):
        if layer.shape != (config.d_ff,):
            raise ThermoclineError(
                f"profile layer {i} has counts of shape {tuple(layer.shape)} but {model} has "
                f"d_ff={config.d_ff}; {fix}"
            )
        if layer.size and (layer.min() < 0 or layer.max() > tokens):
            raise ThermoclineError(
                f"profile layer {i} has counts outside 0..{tokens} (the tokens seen); {fix}"
            )


def _read_json(path: Path, expected_format: str, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ThermoclineError(f"{path} not found: is {path.parent} a {what} directory?")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ThermoclineError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or data.get("format") != expected_format:
        raise ThermoclineError(f"{path}: not a {what} file (format is not {expected_format!r})")
    if data.get("version") != 1:
        raise ThermoclineError(
            f"{path}: {what} version {data.get('version')!r} is not supported (expected 1)"
        )
    return data


def load_profile(directory: str | Path) -> ActivationProfile:
    """The profile the profiler wrote to `directory`, checked against its own model config."""
    directory = Path(directory)
    meta = _read_json(directory / "profile.json", PROFILE_FORMAT, "profile")
    try:
        model = meta["model"]
        config = ModelConfig.from_dict(model["config"])
        tokens = int(meta["tokens"])
    except (KeyError, TypeError, ValueError) as error:
        raise ThermoclineError(f"{directory / 'profile.json'}: missing or bad {error}") from None
    tensors_path = directory / "activations.safetensors"
    try:
        tensors = load_file(str(tensors_path))
    except (FileNotFoundError, SafetensorError) as error:
        raise ThermoclineError(f"cannot read {tensors_path}: {error}") from None
    missing = [i for i in range(config.n_layers) if f"layers.{i}.counts" not in tensors]
    if missing:
        raise ThermoclineError(
            f"{tensors_path} lacks counts for layers {missing[:5]} of the {config.n_layers} "
            f"that {model.get('name', 'the model')} has; re-run `thermocline profile`"
        )
    extra = sum(1 for key in tensors if key.endswith(".counts")) - config.n_layers
    if extra:
        raise ThermoclineError(
            f"{tensors_path} has counts for {extra} layers more than the model's "
            f"{config.n_layers}: the profile does not match its model; re-run `thermocline profile`"
        )
    layers = meta.get("layers")
    if isinstance(layers, list) and len(layers) != config.n_layers:
        raise ThermoclineError(
            f"{directory / 'profile.json'} lists {len(layers)} layers but its model has "
            f"{config.n_layers}; re-run `thermocline profile`"
        )
    return ActivationProfile(
        model_name=str(model.get("name", "")),
        model_digest=str(model.get("digest", "")),
        config=config,
        tokens=tokens,
        counts=[tensors[f"layers.{i}.counts"].astype(np.int64) for i in range(config.n_layers)],
        corpus=str(meta.get("corpus", "")),
        split=str(meta.get("split", "")),
    )


def load_predictor_ranks(directory: str | Path, profile: ActivationProfile) -> list[int]:
    """Per layer, the rank of the predictor in `directory` (its size on the GPU follows)."""
    path = Path(directory) / "predictors.json"
    meta = _read_json(path, PREDICTORS_FORMAT, "predictors")
    n_layers = profile.config.n_layers
    layers = meta.get("layers")
    redo = "these predictors belong to another model; re-run `thermocline train-predictors`"
    if not isinstance(layers, list) or len(layers) != n_layers:
        count = len(layers) if isinstance(layers, list) else "no"
        raise ThermoclineError(
            f"{path} has {count} layers but the profiled model has {n_layers}: {redo}"
        )
    model = meta.get("model")
    digest = model.get("digest") if isinstance(model, dict) else None
    if digest and profile.model_digest and digest != profile.model_digest:
        raise ThermoclineError(
            f"{path} was trained for model digest {digest[:12]}, the profile is of "
            f"{profile.model_digest[:12]}: {redo}"
        )
    ranks = []
    for i, layer in enumerate(layers):
        rank = layer.get("rank") if isinstance(layer, dict) else None
        if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
            raise ThermoclineError(f"{path}: layer {i} has no positive integer rank")
        ranks.append(rank)
    return ranks
