"""Byte accounting of GPU residents and the order in which they get VRAM."""

from __future__ import annotations

import pytest

from thermocline.errors import ThermoclineError
from thermocline.models.config import ModelConfig
from thermocline.placement_solver.residents import (
    attention_bytes,
    dense_units,
    kv_cache_bytes,
    lm_head_bytes,
    neuron_bytes,
    norms_bytes,
    place_dense,
    predictor_bytes,
)

LLAMA_70B = ModelConfig(
    arch="llama",
    vocab_size=32000,
    d_model=8192,
    n_layers=80,
    n_heads=64,
    n_kv_heads=8,
    d_ff=28672,
    activation="relu",
)


def test_llama_70b_sizes():
    assert neuron_bytes(LLAMA_70B, "fp16") == 3 * 8192 * 2
    assert neuron_bytes(LLAMA_70B, "fp32") == 3 * 8192 * 4
    assert attention_bytes(LLAMA_70B, "fp16") == (8192 * 80 * 128 + 64 * 128 * 8192) * 2
    assert kv_cache_bytes(LLAMA_70B, "fp16", 2048) == 2 * 8 * 128 * 2048 * 2
    assert norms_bytes(LLAMA_70B, "bf16") == (2 * 80 + 1) * 8192 * 2
    assert lm_head_bytes(LLAMA_70B, "fp16") == 32000 * 8192 * 2
    assert (
        predictor_bytes(LLAMA_70B, [1024, 2048], "fp16")
        == ((8192 * 1024 + 1024 * 28672) + (8192 * 2048 + 2048 * 28672)) * 2
    )


def test_opt_biases_layer_norms_and_projections():
    opt = ModelConfig(
        arch="opt",
        vocab_size=50272,
        d_model=1024,
        n_layers=24,
        n_heads=16,
        n_kv_heads=16,
        d_ff=4096,
        activation="relu",
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        embed_dim=512,
        tie_embeddings=True,
    )
    assert neuron_bytes(opt, "fp16") == (2 * 1024 + 1) * 2  # fc1 row + bias, fc2 column
    assert attention_bytes(opt, "fp16") == (4 * 1024 * 1024 + 3 * 1024 + 1024) * 2
    assert norms_bytes(opt, "fp16") == ((2 * 24 + 1) * 2 * 1024 + 24 * 1024) * 2
    assert lm_head_bytes(opt, "fp16") == (50272 * 512 + 1024 * 512) * 2  # tied head + project_out


def test_unknown_dtype_is_a_clear_error():
    with pytest.raises(ThermoclineError, match="fp32, fp16, bf16"):
        neuron_bytes(LLAMA_70B, "int3")


def _names(residents):
    return [r.name for r in residents if r.on_gpu]


def test_priority_order_fills_a_prefix_and_names_the_minimum():
    config = ModelConfig(
        arch="llama", vocab_size=100, d_model=16, n_layers=3, n_heads=2, n_kv_heads=2, d_ff=32
    )
    units = dense_units(config, "fp16", 8, predictor_ranks=[4, 4, 4])
    required = norms_bytes(config, "fp16") + predictor_bytes(config, [4, 4, 4], "fp16")
    layer = attention_bytes(config, "fp16") + kv_cache_bytes(config, "fp16", 8)
    residents, used = place_dense(units, required + 2 * layer + 10)
    assert _names(residents) == [
        "norms",
        "predictors",
        "layers.0.attention",
        "layers.0.kv_cache",
        "layers.1.attention",
        "layers.1.kv_cache",
    ]
    assert used == required + 2 * layer
    # Everything fits: lm_head last.
    residents, used = place_dense(dense_units(config, "fp16", 8, None), 10**9)
    assert _names(residents)[-1] == "lm_head" and all(r.on_gpu for r in residents)
    with pytest.raises(ThermoclineError, match=rf"minimum is .*\({required} bytes\)"):
        place_dense(dense_units(config, "fp16", 8, [4, 4, 4]), required - 1)
