"""convert: a checkpoint (+ placement, predictors, profile) -> one packed model.thermo file.

The layout is planned from the config and the placement before any weight is read; the
checkpoint's tensors then stream through one at a time. A layer's gate, up and down wait
in memory only until all three have arrived, are permuted hot-first, split and written.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rich.progress import Progress
from torch import Tensor

from thermocline.converter.format import StreamingWriter
from thermocline.converter.layout import (
    FFN_PARTS,
    FORMAT,
    VERSION,
    canonical_shapes,
    ffn_part,
    plan,
)
from thermocline.converter.sources import (
    read_placement,
    read_predictors,
    read_profile_thresholds,
)
from thermocline.errors import ThermoclineError
from thermocline.models.checkpoint import Checkpoint, load_checkpoint
from thermocline.models.config import ModelConfig
from thermocline.predictor_trainer.model import Predictors
from thermocline.runtime.engine import parse_dtype


def permutation(d_ff: int, hot: list[int]) -> Tensor:
    """Stored order: hot neurons as the placement lists them, then the cold ones ascending."""
    is_cold = torch.ones(d_ff, dtype=torch.bool)
    hot_ids = torch.tensor(hot, dtype=torch.int64)
    is_cold[hot_ids] = False
    return torch.cat([hot_ids, is_cold.nonzero().flatten()])


def write_layer_ffn(
    writer: StreamingWriter,
    config: ModelConfig,
    layer: int,
    parts: dict[str, Tensor],
    perm: Tensor,
    n_hot: int,
    predictors: Predictors | None,
) -> None:
    """One layer's neurons, reordered and split into hot and cold blocks of rows."""
    rows = {"up": parts["up.weight"][perm], "down_t": parts["down.weight"].t()[perm]}
    if config.gated:
        rows["gate"] = parts["gate.weight"][perm]
    if config.mlp_bias:
        rows["up_bias"] = parts["up.bias"][perm]
        writer.write(f"layers.{layer}.ffn.down_bias", parts["down.bias"])
    for key, value in rows.items():
        writer.write(f"layers.{layer}.ffn.hot.{key}", value[:n_hot])
        writer.write(f"layers.{layer}.ffn.cold.{key}", value[n_hot:])
    writer.write(f"layers.{layer}.ffn.perm", perm)
    if predictors is not None:
        predictor = predictors.layers[layer]
        writer.write(f"layers.{layer}.predictor.w1", predictor.w1)
        writer.write(f"layers.{layer}.predictor.w2", predictor.w2[perm])


def describe_inputs(
    checkpoint: Checkpoint,
    placement: Path | None,
    predictors: Path | None,
    profile: Path | None,
    dtype: str,
) -> tuple[list[list[int]], Predictors | None, dict[str, str]]:
    """Per-layer hot ids, the predictors, and the metadata that records all the inputs."""
    cfg = checkpoint.config
    model = {"name": checkpoint.name, "path": str(checkpoint.path), "format": checkpoint.format}
    sources = {
        "model": {**model, "source_dtype": checkpoint.source_dtype, "digest": checkpoint.digest}
    }
    hot, placement_meta = [[] for _ in range(cfg.n_layers)], None
    if placement is not None:
        placed, digest = read_placement(Path(placement), checkpoint, dtype)
        hot = [ids.tolist() for ids in placed.hot_neurons]
        residents = {"hot_counts": placed.hot_counts, "gpu_residents": placed.gpu_residents}
        placement_meta = {**placed.summary, **residents}
        sources["placement"] = {"path": str(placement), "digest": digest}
    source, predictor_meta = None, None
    if predictors is not None:
        source, digest = read_predictors(Path(predictors), checkpoint)
        keys = ("rank", "threshold", "recall", "precision", "predicted_sparsity", "true_sparsity")
        predictor_meta = {
            "nonlinearity": source.meta.get("nonlinearity", "relu"),
            "recall_target": source.meta.get("recall_target"),
            "layers": [{k: la[k] for k in keys if k in la} for la in source.meta["layers"]],
        }
        sources["predictors"] = {"path": str(predictors), "digest": digest}
    thresholds = [0.0] * cfg.n_layers
    if profile is not None:
        thresholds, digest = read_profile_thresholds(Path(profile), checkpoint)
        sources["profile"] = {"path": str(profile), "digest": digest}
    metadata = {
        "format": FORMAT,
        "version": str(VERSION),
        "config": json.dumps(cfg.to_dict()),
        "tokenizer": json.dumps(checkpoint.tokenizer.to_json()),
        "dtype": dtype,
        "thresholds": json.dumps(thresholds),
        "predictors": json.dumps(predictor_meta),
        "placement": json.dumps(placement_meta),
        "sources": json.dumps(sources),
    }
    return hot, source, metadata


def convert(
    model_spec: str,
    out: Path,
    placement: Path | None = None,
    predictors: Path | None = None,
    profile: Path | None = None,
    dtype: str = "fp16",
    progress: bool = False,
) -> Path:
    """Write the artifact; without placement and predictors a dense one (all neurons cold)."""
    out, torch_dtype = Path(out), parse_dtype(dtype)
    checkpoint = load_checkpoint(model_spec)
    cfg = checkpoint.config
    hot, source, metadata = describe_inputs(checkpoint, placement, predictors, profile, dtype)
    hot_counts = [len(ids) for ids in hot]
    specs = plan(cfg, torch_dtype, hot_counts, [p.rank for p in source.layers] if source else None)
    perms = [permutation(cfg.d_ff, ids) for ids in hot]
    shapes = canonical_shapes(cfg)
    needed = [p for p in FFN_PARTS if f"layers.0.ffn.{p}" in shapes]
    pending: dict[int, dict[str, Tensor]] = {}
    with (
        StreamingWriter(out, specs, metadata) as writer,
        Progress(disable=not progress) as bar,
    ):
        task = bar.add_task(f"converting {checkpoint.name}", total=len(specs))
        for name, tensor in checkpoint.tensors(torch_dtype):
            if name == "lm_head.weight" and cfg.tie_embeddings:
                continue  # tied: the embedding is the head
            if name not in shapes:
                raise ThermoclineError(f"{checkpoint.path}: unexpected tensor {name}")
            if tuple(tensor.shape) != shapes[name]:
                raise ThermoclineError(
                    f"{checkpoint.path}: {name} has shape {tuple(tensor.shape)}, "
                    f"the config implies {shapes[name]}"
                )
            if (where := ffn_part(name)) is None:
                writer.write(name, tensor)
            else:  # hold a layer's FFN tensors until the last one arrives
                layer, part = where
                pending.setdefault(layer, {})[part] = tensor
                if all(p in pending[layer] for p in needed):
                    parts, n_hot = pending.pop(layer), hot_counts[layer]
                    write_layer_ffn(writer, cfg, layer, parts, perms[layer], n_hot, source)
            bar.update(task, completed=len(writer.written))
        if pending:
            raise ThermoclineError(
                f"{checkpoint.path}: incomplete FFN weights for layers {sorted(pending)}"
            )
    return out
