"""Our dense forward equals transformers on the same weights: prefill and 16 cached decode steps,
each decode step through the blocks in torch and, where the model allows, the fused CPU step."""

import pytest
import torch
from tiny_models import tiny_llama, tiny_opt

from thermocline.models import KVCache, build_model, load_checkpoint
from thermocline.runtime.fused_decode import use_fused_decode

PROMPT, DECODE_STEPS = 7, 16


def assert_matches_reference(path, reference) -> None:
    model = build_model(load_checkpoint(path))
    tokens = torch.randint(
        0, 256, (1, PROMPT + DECODE_STEPS), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        expected = reference(tokens).logits[0]
    assert_decode_matches(model, tokens, expected)
    if use_fused_decode(model):
        assert_decode_matches(model, tokens, expected)
    else:
        assert model.cfg.arch == "opt", "every LLaMA-family test model runs the fused step"


def assert_decode_matches(model, tokens, expected) -> None:
    cache = KVCache(model.cfg, 1, PROMPT + DECODE_STEPS, torch.float32)
    with torch.inference_mode():
        prefill = model(tokens[:, :PROMPT], 0, cache)[0]
        torch.testing.assert_close(prefill, expected[:PROMPT], atol=1e-4, rtol=0)
        last = model(tokens[:, :PROMPT], 0, model.new_cache(1, PROMPT), last_only=True)
        assert last.shape == (1, 1, expected.shape[-1])  # the head ran on one position
        torch.testing.assert_close(last[0, 0], expected[PROMPT - 1], atol=1e-4, rtol=0)
        for step in range(PROMPT, PROMPT + DECODE_STEPS):
            logits = model(tokens[:, step : step + 1], step, cache)[0, -1]
            torch.testing.assert_close(logits, expected[step], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "activation", ["silu", "relu", "fatrelu", "drelu", "gelu", "gelu_pytorch_tanh"]
)
def test_llama_activations(tmp_path, activation):
    assert_matches_reference(*tiny_llama(tmp_path, activation))


@pytest.mark.parametrize(
    "rope_scaling",
    [
        {"rope_type": "linear", "factor": 2.0},
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32},
    ],
    ids=lambda s: s["rope_type"],
)
def test_llama_rope_scaling(tmp_path, rope_scaling):
    assert_matches_reference(*tiny_llama(tmp_path, rope_scaling=rope_scaling, rope_theta=500.0))


def test_llama_tied_embeddings_and_mha(tmp_path):
    assert_matches_reference(*tiny_llama(tmp_path, tie_word_embeddings=True, num_key_value_heads=4))


def test_llama_attention_bias(tmp_path):
    assert_matches_reference(*tiny_llama(tmp_path, attention_bias=True))


@pytest.mark.parametrize("kind", ["mistral", "qwen2"])
def test_mistral_and_qwen2_layouts(tmp_path, kind):
    assert_matches_reference(*tiny_llama(tmp_path, kind=kind))


@pytest.mark.parametrize("post_norm", [False, True], ids=["pre_norm", "post_norm_projected"])
def test_opt(tmp_path, post_norm):
    assert_matches_reference(*tiny_opt(tmp_path, post_norm))
