"""Byte accounting for everything the GPU may hold, and the order in which it gets VRAM.

Priority order (recorded in placement.json as PRIORITY_ORDER):
  1. norms (and the FFN output biases) and 2. predictors: required. The GPU's half of a
     layer's FFN cannot start before that layer's predictor has picked the active neurons and
     the input has been normalized; both are small next to the weights. A budget below them
     is an error that names the minimum.
  3. attention with its KV cache, layer by layer from the first: attention runs where its KV
     cache lives, and a layer whose attention stays on the CPU costs an extra CPU-GPU
     hand-off every token; a prefix of layers is what a runtime can honour simply.
  4. lm_head: one large matrix and one hand-off per token, so it yields to attention.
  5. FFN neurons share whatever is left (the ILP decides which).
Every dense tensor is read for every token, so per byte it serves the GPU at least as well
as the hottest neuron (impact <= 1): dense residents come before neurons. Units are taken in
order while they fit; the first that does not fit ends the dense part (later units stay on
the CPU) and the remaining VRAM goes to neurons. Embeddings stay on the CPU (a row lookup).
"""

from __future__ import annotations

from dataclasses import dataclass

from thermocline.errors import ThermoclineError
from thermocline.models.config import ModelConfig
from thermocline.placement_solver.units import format_size

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
PRIORITY_ORDER = [
    "norms",
    "predictors",
    "layers.{i}.attention + layers.{i}.kv_cache, i = 0, 1, ...",
    "lm_head",
    "ffn hot neurons",
]


@dataclass
class Resident:
    name: str  # "norms", "predictors", "layers.{i}.attention", "layers.{i}.kv_cache", "lm_head"
    bytes: int
    on_gpu: bool = False
    required: bool = False  # must fit for the GPU to be used at all


def dtype_bytes(dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise ThermoclineError(
            f"unsupported weight dtype {dtype!r}; choose one of {', '.join(DTYPE_BYTES)}"
        )
    return DTYPE_BYTES[dtype]


def neuron_bytes(config: ModelConfig, dtype: str) -> int:
    """One neuron: its input rows (gate and up, or fc1) with their biases, and its down column."""
    elements = (config.ffn_input_rows + 1) * config.d_model
    if config.mlp_bias:
        elements += config.ffn_input_rows
    return elements * dtype_bytes(dtype)


def attention_bytes(config: ModelConfig, dtype: str) -> int:
    """q, k, v and o projections of one layer, with their biases."""
    qkv_width = (config.n_heads + 2 * config.n_kv_heads) * config.head_dim
    elements = config.d_model * qkv_width + config.n_heads * config.head_dim * config.d_model
    elements += qkv_width * config.qkv_bias + config.d_model * config.o_bias
    return elements * dtype_bytes(dtype)


def kv_cache_bytes(config: ModelConfig, dtype: str, context: int) -> int:
    """Keys and values of one layer for `context` positions."""
    return 2 * config.n_kv_heads * config.head_dim * context * dtype_bytes(dtype)


def norms_bytes(config: ModelConfig, dtype: str) -> int:
    """Two norms per layer and the final one (LayerNorm has a bias), plus FFN output biases."""
    per_norm = config.d_model * (1 if config.arch == "llama" else 2)
    elements = (
        2 * config.n_layers + 1
    ) * per_norm + config.n_layers * config.d_model * config.mlp_bias
    return elements * dtype_bytes(dtype)


def lm_head_bytes(config: ModelConfig, dtype: str) -> int:
    """The output projection (the embedding matrix when tied) and OPT's project_out."""
    elements = config.vocab_size * config.embed_dim
    if config.embed_dim != config.d_model:
        elements += config.d_model * config.embed_dim
    return elements * dtype_bytes(dtype)


def predictor_bytes(config: ModelConfig, ranks: list[int], dtype: str) -> int:
    """Low-rank predictors d_model -> rank -> d_ff, no biases, stored in the weight dtype."""
    return sum(config.d_model * r + r * config.d_ff for r in ranks) * dtype_bytes(dtype)


def dense_units(
    config: ModelConfig, dtype: str, context: int, predictor_ranks: list[int] | None
) -> list[list[Resident]]:
    """The dense residents in priority order, grouped in units that move together."""
    units = [[Resident("norms", norms_bytes(config, dtype), required=True)]]
    if predictor_ranks:
        size = predictor_bytes(config, predictor_ranks, dtype)
        units.append([Resident("predictors", size, required=True)])
    attention, kv = attention_bytes(config, dtype), kv_cache_bytes(config, dtype, context)
    for i in range(config.n_layers):
        units.append(
            [Resident(f"layers.{i}.attention", attention), Resident(f"layers.{i}.kv_cache", kv)]
        )
    units.append([Resident("lm_head", lm_head_bytes(config, dtype))])
    return units


def place_dense(units: list[list[Resident]], budget: int) -> tuple[list[Resident], int]:
    """Mark the units that fit, in order, as on the GPU; return all residents and bytes used.

    Raises a ThermoclineError naming the minimum budget when the required units do not fit.
    """
    required = sum(r.bytes for unit in units for r in unit if r.required)
    if budget < required:
        names = ", ".join(r.name for unit in units for r in unit if r.required)
        raise ThermoclineError(
            f"a VRAM budget of {format_size(budget)} cannot hold the dense GPU residents "
            f"({names}): the minimum is {format_size(required)} ({required} bytes); raise "
            "--vram-budget, use smaller predictors, or place for a CPU-only run with --vram-budget 0"
        )
    used, full = 0, False
    for unit in units:
        size = sum(r.bytes for r in unit)
        full = full or used + size > budget
        for resident in unit:
            resident.on_gpu = not full
        used += 0 if full else size
    return [r for unit in units for r in unit], used
