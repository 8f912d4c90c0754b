"""Load whatever a model spec names into something that runs: dense, or sparse from a .thermo."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from thermocline.errors import ThermoclineError
from thermocline.models.checkpoint import (
    DEFAULT_MODEL,
    build_model,
    load_checkpoint,
    resolve_model_path,
)
from thermocline.models.tokenizer import TextTokenizer
from thermocline.models.transformer import Transformer

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ThermoclineError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


@dataclass
class LoadedModel:
    name: str
    model: Transformer
    tokenizer: TextTokenizer
    mode: str  # "dense" or "sparse"


def load_model(
    spec: str | Path = DEFAULT_MODEL, dtype: str = "fp32", max_seq_len: int | None = None
) -> LoadedModel:
    """A dense model from a checkpoint (HF dir, GGUF, known name), or the artifact's engine."""
    path = resolve_model_path(spec)
    if path.suffix == ".thermo":
        from thermocline.runtime.sparse_engine import load_artifact_model

        return load_artifact_model(path, dtype, max_seq_len)
    checkpoint = load_checkpoint(spec)
    model = build_model(checkpoint, parse_dtype(dtype), max_seq_len)
    return LoadedModel(str(spec), prepare_cpu_model(model, dtype), checkpoint.tokenizer, "dense")


def prepare_cpu_model(model: Transformer, dtype: str) -> Transformer:
    """How a loaded model runs on the CPU: 16-bit weights with fp32 activations
    (half_weights.py), then one fused numba call per decoded token where the model allows."""
    from thermocline.runtime.fused_decode import use_fused_decode
    from thermocline.runtime.half_weights import use_half_weights

    if dtype != "fp32":
        use_half_weights(model)
    use_fused_decode(model)
    return model
