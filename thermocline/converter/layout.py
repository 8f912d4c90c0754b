"""Which tensors a .thermo file holds, with what shapes, in what order: one plan for both sides.

The writer lays the file out from this plan before reading any weight; the reader checks the
file against the same plan, so the two cannot drift apart. Order: the int32 permutations
first (keeps every tensor aligned to its element size), then the dense tensors and the hot
blocks and predictors of each layer, and the cold blocks last, as one contiguous region
that the runtime memory-maps.
"""

from __future__ import annotations

import torch

from thermocline.converter.format import TensorSpec
from thermocline.models.config import ModelConfig
from thermocline.models.transformer import Transformer

FORMAT = "thermocline"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
PERM_DTYPE = torch.int32
# Canonical FFN tensors (layers.{i}.ffn.<part>) that the artifact stores split per neuron.
FFN_PARTS = ("gate.weight", "up.weight", "up.bias", "down.weight", "down.bias")


def canonical_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint of this config holds (a tied lm_head is not stored)."""
    with torch.device("meta"):
        model = Transformer(config)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if config.tie_embeddings:
        del shapes["lm_head.weight"]
    return shapes


def ffn_part(name: str) -> tuple[int, str] | None:
    """(layer, part) for a canonical FFN tensor name, None for any other tensor."""
    parts = name.split(".", 3)
    if len(parts) == 4 and parts[0] == "layers" and parts[2] == "ffn" and parts[3] in FFN_PARTS:
        return int(parts[1]), parts[3]
    return None


def block_names(config: ModelConfig, layer: int, side: str) -> list[str]:
    """Tensors of one neuron block (side "hot" or "cold"): [n, d_model] rows, plus OPT biases."""
    prefix = f"layers.{layer}.ffn.{side}."
    names = [prefix + "gate"] if config.gated else []
    names += [prefix + "up", prefix + "down_t"]
    return names + ([prefix + "up_bias"] if config.mlp_bias else [])


def plan(
    config: ModelConfig, dtype: torch.dtype, hot_counts: list[int], ranks: list[int] | None
) -> list[TensorSpec]:
    """The artifact's tensors in file order, from the config, hot counts and predictor ranks."""
    d, n = config.d_model, config.n_layers

    def block(layer: int, side: str, rows: int) -> list[TensorSpec]:
        return [
            TensorSpec(name, dtype, (rows,) if name.endswith("bias") else (rows, d))
            for name in block_names(config, layer, side)
        ]

    specs = [TensorSpec(f"layers.{i}.ffn.perm", PERM_DTYPE, (config.d_ff,)) for i in range(n)]
    specs += [
        TensorSpec(name, dtype, shape)
        for name, shape in canonical_shapes(config).items()
        if ffn_part(name) is None
    ]
    for i in range(n):
        specs += block(i, "hot", hot_counts[i])
        if config.mlp_bias:
            specs.append(TensorSpec(f"layers.{i}.ffn.down_bias", dtype, (d,)))
        if ranks is not None:
            specs.append(TensorSpec(f"layers.{i}.predictor.w1", dtype, (ranks[i], d)))
            specs.append(TensorSpec(f"layers.{i}.predictor.w2", dtype, (config.d_ff, ranks[i])))
    for i in range(n):
        specs += block(i, "cold", config.d_ff - hot_counts[i])
    return specs
