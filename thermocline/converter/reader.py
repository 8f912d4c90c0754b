"""read_artifact: a .thermo file -> typed, validated objects over memory-mapped weights.

Everything is checked before a weight is used: the container, format and version, the header
digest, the config, every tensor's presence, dtype, shape and bytes against the layout the
config implies, and that each permutation is one. Nothing from the file is executed: the
metadata is JSON, the weights are raw bytes, and the tensors are views of a copy-on-write
memory map, so cold neurons are paged in from disk only when the runtime reads them.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from thermocline.converter.format import TensorSpec
from thermocline.converter.validate import NONLINEARITIES, ValidHeader, validate_artifact
from thermocline.errors import ThermoclineError
from thermocline.models.checkpoint import Checkpoint, build_model
from thermocline.models.config import ModelConfig
from thermocline.models.tokenizer import TextTokenizer
from thermocline.models.transformer import Transformer
from thermocline.runtime.engine import parse_dtype


@dataclass
class NeuronBlock:
    """Rows of one side (hot or cold) of a layer, in stored order; n may be 0."""

    gate: Tensor | None  # [n, d_model]; None for OPT (no gate)
    up: Tensor  # [n, d_model] (fc1 for OPT)
    down_t: Tensor  # [n, d_model]: row k = the output weights of stored neuron k
    up_bias: Tensor | None  # [n] (OPT)

    @property
    def n(self) -> int:
        return self.up.shape[0]


@dataclass
class Predictor:
    """logits = w2 @ nonlinearity(w1 @ x); a neuron is predicted active iff logit > threshold."""

    w1: Tensor  # [rank, d_model]
    w2: Tensor  # [d_ff, rank], rows in stored (hot-first) neuron order
    threshold: float
    nonlinearity: str

    @property
    def rank(self) -> int:
        return self.w1.shape[0]

    def predict(self, x: Tensor) -> Tensor:
        """Bool [..., d_ff] in stored neuron order."""
        act = NONLINEARITIES[self.nonlinearity]
        return act(x.to(self.w1.dtype) @ self.w1.t()) @ self.w2.t() > self.threshold

    __call__ = predict  # a runtime Predictor callable that a fused step can also read


@dataclass
class LayerFFN:
    perm: Tensor  # int64 [d_ff]: perm[k] = original index of stored neuron k (hot first)
    hot: NeuronBlock  # stored neurons 0..n_hot-1
    cold: NeuronBlock  # stored neurons n_hot..d_ff-1 (memory-mapped)
    down_bias: Tensor | None  # [d_model] (OPT)
    threshold: float  # activation magnitude threshold (0: exact, dense)
    predictor: Predictor | None


@dataclass
class Artifact:
    path: Path
    version: int
    config: ModelConfig
    tokenizer: TextTokenizer
    dtype: str  # "fp16", "bf16" or "fp32": every weight's dtype
    layers: list[LayerFFN]
    dense: dict[str, Tensor]  # canonical name -> every non-FFN tensor (no tied lm_head)
    placement: dict[str, Any] | None  # summary: hot_counts, gpu_residents, budget, solver...
    predictors: dict[str, Any] | None  # nonlinearity, recall_target, per-layer rank/threshold...
    sources: dict[str, Any]  # model/profile/predictors/placement: path or name, digest

    @property
    def thresholds(self) -> list[float]:
        return [layer.threshold for layer in self.layers]

    def tensors(self, dtype: torch.dtype | None = None) -> Iterator[tuple[str, Tensor]]:
        """Canonical tensors with the permutation undone, one layer at a time (None: as stored)."""
        for name, tensor in self._stored_tensors():
            yield name, tensor if dtype is None else tensor.to(dtype)

    def _stored_tensors(self) -> Iterator[tuple[str, Tensor]]:
        yield from self.dense.items()
        for i, layer in enumerate(self.layers):
            order = torch.argsort(layer.perm)

            def rows(key: str, layer: LayerFFN = layer, order: Tensor = order) -> Tensor:
                return torch.cat([getattr(layer.hot, key), getattr(layer.cold, key)])[order]

            prefix = f"layers.{i}.ffn."
            if self.config.gated:
                yield prefix + "gate.weight", rows("gate")
            yield prefix + "up.weight", rows("up")
            yield prefix + "down.weight", rows("down_t").t().contiguous()
            if self.config.mlp_bias:
                yield prefix + "up.bias", rows("up_bias")
                yield prefix + "down.bias", layer.down_bias

    def dense_state_dict(self) -> dict[str, Tensor]:
        return dict(self.tensors())

    def as_checkpoint(self) -> Checkpoint:
        """The artifact seen as a dense checkpoint (what build_model and the profiler read)."""
        model = self.sources["model"]
        return Checkpoint(
            name=str(self.path),
            path=self.path,
            format="thermo",
            config=self.config,
            tokenizer=self.tokenizer,
            tensors=self.tensors,
            digest=model.get("digest", ""),
            source_dtype=self.dtype,
        )


def build_dense_model(
    artifact: Artifact, dtype: torch.dtype | None = None, max_seq_len: int | None = None
) -> Transformer:
    """The dense Transformer with the artifact's weights (canonical order, thresholds 0)."""
    return build_model(artifact.as_checkpoint(), dtype or parse_dtype(artifact.dtype), max_seq_len)


def read_artifact(path: str | Path) -> Artifact:
    """Validate a .thermo file and return its typed contents over memory-mapped weights."""
    h = validate_artifact(Path(path))
    with open(h.path, "rb") as f:  # copy-on-write: writable views that never touch the file
        buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)

    def view(spec: TensorSpec) -> Tensor:
        count = torch.Size(spec.shape).numel()
        if count == 0:  # frombuffer refuses empty views
            return torch.empty(spec.shape, dtype=spec.dtype)
        offset = h.data_start + h.offsets[spec.name]
        tensor = torch.frombuffer(buffer, dtype=spec.dtype, count=count, offset=offset)
        return tensor.view(spec.shape)

    tensors = {spec.name: view(spec) for spec in h.specs}
    layers = [_layer(h, tensors, i) for i in range(h.config.n_layers)]
    return Artifact(
        path=h.path,
        version=h.version,
        config=h.config,
        tokenizer=h.tokenizer,
        dtype=h.dtype,
        layers=layers,
        dense={k: t for k, t in tensors.items() if ".ffn." not in k and ".predictor." not in k},
        placement=h.placement,
        predictors=h.predictors,
        sources=h.sources,
    )


def _layer(h: ValidHeader, tensors: dict[str, Tensor], i: int) -> LayerFFN:
    prefix, d_ff = f"layers.{i}.", h.config.d_ff
    perm = tensors[prefix + "ffn.perm"].long()
    if not torch.equal(torch.sort(perm).values, torch.arange(d_ff)):
        raise ThermoclineError(
            f"{h.path}: {prefix}ffn.perm is not a permutation of 0..{d_ff - 1} (an index is "
            "repeated or out of range); the file is corrupt: convert again"
        )

    def block(side: str) -> NeuronBlock:
        get = lambda key: tensors.get(f"{prefix}ffn.{side}.{key}")  # noqa: E731
        return NeuronBlock(get("gate"), get("up"), get("down_t"), get("up_bias"))

    predictor = None
    if h.predictors is not None:
        predictor = Predictor(
            tensors[prefix + "predictor.w1"],
            tensors[prefix + "predictor.w2"],
            float(h.predictors["layers"][i]["threshold"]),
            h.predictors["nonlinearity"],
        )
    down_bias = tensors.get(prefix + "ffn.down_bias")
    return LayerFFN(perm, block("hot"), block("cold"), down_bias, h.thresholds[i], predictor)
