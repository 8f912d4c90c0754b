"""The converter's optional inputs (placement, predictors, profile), checked against the model.

Each must come from the same checkpoint as the model being converted: its recorded model
digest has to match, else the neuron ids, thresholds or predictor rows would belong to
another model's neurons.
"""

from __future__ import annotations

from pathlib import Path

from thermocline.errors import ThermoclineError
from thermocline.models.checkpoint import Checkpoint, file_digest
from thermocline.placement_solver import Placement, load_placement
from thermocline.placement_solver.residents import dtype_bytes
from thermocline.predictor_trainer.io import load_predictors
from thermocline.predictor_trainer.model import Predictors
from thermocline.profiler.artifact import load_profile


def check_model(what: str, path: Path, digest: str, checkpoint: Checkpoint) -> None:
    if digest != checkpoint.digest:
        raise ThermoclineError(
            f"{what} {path} was made for model digest {digest[:16]}, but {checkpoint.name} has "
            f"digest {checkpoint.digest[:16]}: redo the {what} for this model"
        )


def check_layers(what: str, path: Path, count: int, checkpoint: Checkpoint) -> None:
    if count != checkpoint.config.n_layers:
        raise ThermoclineError(
            f"{what} {path} has {count} layers, {checkpoint.name} has {checkpoint.config.n_layers}"
        )


def read_placement(path: Path, checkpoint: Checkpoint, dtype: str) -> tuple[Placement, str]:
    """The placement and the digest of its file."""
    placement = load_placement(path)
    check_model("placement", path, placement.model_digest, checkpoint)
    check_layers("placement", path, placement.n_layers, checkpoint)
    if placement.d_ff != checkpoint.config.d_ff:
        raise ThermoclineError(
            f"placement {path} is for d_ff {placement.d_ff}, the model has {checkpoint.config.d_ff}"
        )
    if dtype_bytes(placement.dtype) != dtype_bytes(dtype):
        raise ThermoclineError(
            f"placement {path} was solved for {placement.dtype} weights; at {dtype} every neuron "
            f"has another size and its VRAM budget no longer holds: convert with --dtype "
            f"{placement.dtype} or run `thermocline place --dtype {dtype}`"
        )
    return placement, file_digest([path])


def read_predictors(directory: Path, checkpoint: Checkpoint) -> tuple[Predictors, str]:
    """The predictors (checked against the model's shapes) and the digest of their files."""
    predictors = load_predictors(directory)
    check_model(
        "predictors", directory, predictors.meta.get("model", {}).get("digest", ""), checkpoint
    )
    check_layers("predictors", directory, len(predictors.layers), checkpoint)
    cfg = checkpoint.config
    for i, p in enumerate(predictors.layers):
        if p.w1.shape[1] != cfg.d_model or p.w2.shape[0] != cfg.d_ff:
            raise ThermoclineError(
                f"predictors {directory}: layer {i} maps {p.w1.shape[1]} inputs to "
                f"{p.w2.shape[0]} neurons, the model has d_model {cfg.d_model}, d_ff {cfg.d_ff}"
            )
    files = [directory / "predictors.json", directory / "predictors.safetensors"]
    return predictors, file_digest(files)


def read_profile_thresholds(directory: Path, checkpoint: Checkpoint) -> tuple[list[float], str]:
    """Per-layer activation thresholds from the profile, and the digest of its files."""
    profile = load_profile(directory)
    check_model("profile", directory, profile.meta.get("model", {}).get("digest", ""), checkpoint)
    check_layers("profile", directory, len(profile.thresholds), checkpoint)
    files = [directory / "profile.json", directory / "activations.safetensors"]
    return profile.thresholds, file_digest(files)
