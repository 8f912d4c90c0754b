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

FORMAT = "thermocline"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
PERM_DTYPE = torch.int32
# Canonical FFN tensors (layers.{i}.ffn.<part>) that the artifact stores split per neuron.
FFN_PARTS = ("gate.weight", "up.weight", "up.bias", "down.weight", "down.bias")


def canonical_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint of this config holds (a tied lm_head is not stored).

    The names, shapes and order of `Transformer(config).state_dict()`, derived from the config
    alone: building even a meta-device model imports ~900 torch modules (~145 MiB) for its
    init and RoPE ops, the largest fixed cost of a conversion. A test holds the two equal.
    """
    d, e, d_ff = config.d_model, config.embed_dim, config.d_ff
    q, kv = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
    norm = ("weight", "bias") if config.arch == "opt" else ("weight",)  # LayerNorm or RMSNorm
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (config.vocab_size, e)}
    if config.arch == "opt":
        shapes["pos_embed.weight"] = (config.max_seq_len + config.pos_offset, d)
    if e != d:
        shapes |= {"project_in.weight": (d, e), "project_out.weight": (e, d)}
    for i in range(config.n_layers):
        layer = {f"{n}_norm.{p}": (d,) for n in ("attn", "ffn") for p in norm}
        layer["attn.wqkv.weight"] = (q + 2 * kv, d)
        if config.qkv_bias:
            layer["attn.wqkv.bias"] = (q + 2 * kv,)
        layer["attn.wo.weight"] = (d, q)
        if config.o_bias:
            layer["attn.wo.bias"] = (d,)
        if config.gated:
            layer["ffn.gate.weight"] = (d_ff, d)
        layer["ffn.up.weight"] = (d_ff, d)
        if config.mlp_bias:
            layer["ffn.up.bias"] = (d_ff,)
        layer["ffn.down.weight"] = (d, d_ff)
        if config.mlp_bias:
            layer["ffn.down.bias"] = (d,)
        shapes |= {f"layers.{i}.{name}": shape for name, shape in layer.items()}
    if config.norm_before:  # OPT's post-norm variant has no final norm
        shapes |= {f"norm.{p}": (d,) for p in norm}
    if not config.tie_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, e)
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
