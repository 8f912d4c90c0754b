"""With an oracle predictor (the true active set) the sparse engine equals the dense one.

The artifact layout is built straight from a dense model (random hot/cold split,
tiny_models.split_layers), so the engine is tested apart from the converter; the end-to-end
test goes through a .thermo.
"""

import pytest
import torch
from tiny_models import split_layers, tiny_llama, tiny_opt

from thermocline.models import KVCache, build_model, load_checkpoint
from thermocline.runtime.bench import measure_truth
from thermocline.runtime.sparse_engine import sparse_transformer

PROMPT, DECODE_STEPS = 6, 12


def oracle_model(dense, hot_fraction: float, threshold: float):
    dense_tensors = {k: v for k, v in dense.state_dict().items() if ".ffn." not in k}
    model = sparse_transformer(
        dense.cfg, dense_tensors, split_layers(dense, hot_fraction, threshold), use_predictors=False
    )
    for block in model.layers:
        block.ffn.predictor = block.ffn.true_mask  # the oracle
    return model


def run(model, tokens):
    cache = KVCache(model.cfg, 1, tokens.shape[1], torch.float32)
    with torch.inference_mode():
        out = [model(tokens[:, :PROMPT], 0, cache)[0]]
        for step in range(PROMPT, tokens.shape[1]):
            out.append(model(tokens[:, step : step + 1], step, cache)[0])
    return torch.cat(out)


@pytest.mark.parametrize("hot_fraction", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("activation,threshold", [("silu", 0.02), ("relu", 0.0), ("fatrelu", 0.0)])
def test_oracle_sparse_equals_dense_llama(tmp_path, hot_fraction, activation, threshold):
    dense = build_model(load_checkpoint(tiny_llama(tmp_path, activation)[0]))
    for block in dense.layers:
        block.ffn.threshold = threshold
    tokens = torch.randint(
        0, 256, (1, PROMPT + DECODE_STEPS), generator=torch.Generator().manual_seed(3)
    )
    sparse = oracle_model(dense, hot_fraction, threshold)
    torch.testing.assert_close(run(sparse, tokens), run(dense, tokens), atol=1e-4, rtol=0)
    stats = [block.ffn.stats for block in sparse.layers]
    assert all(s.tokens == PROMPT + DECODE_STEPS for s in stats)
    if activation != "fatrelu":  # silu with a threshold and relu skip neurons for real
        assert all(s.sparsity > 0.1 for s in stats)


@pytest.mark.parametrize("hot_fraction", [0.0, 0.3, 1.0])
def test_oracle_sparse_equals_dense_opt(tmp_path, hot_fraction):
    dense = build_model(load_checkpoint(tiny_opt(tmp_path)[0]))
    tokens = torch.randint(
        0, 256, (1, PROMPT + DECODE_STEPS), generator=torch.Generator().manual_seed(4)
    )
    sparse = oracle_model(dense, hot_fraction, 0.0)
    torch.testing.assert_close(run(sparse, tokens), run(dense, tokens), atol=1e-4, rtol=0)


@pytest.mark.parametrize("hot_fraction", [0.0, 0.3])
def test_prefill_paths_agree(tmp_path, hot_fraction):
    """A short prompt through the per-token sparse kernels or one masked dense GEMM (the
    two sides of sparse_engine.DENSE_MIN_TOKENS): the same logits."""
    dense = build_model(load_checkpoint(tiny_llama(tmp_path, "silu")[0]))
    sparse = oracle_model(dense, hot_fraction, 0.02)
    tokens = torch.randint(0, 256, (1, 4), generator=torch.Generator().manual_seed(5))
    logits = []
    for dense_min_tokens in (4, 5):  # masked dense, then per-token
        for block in sparse.layers:
            block.ffn.dense_min_tokens = dense_min_tokens
        with torch.inference_mode():
            logits.append(sparse(tokens, 0, KVCache(sparse.cfg, 1, 4, torch.float32))[0])
    torch.testing.assert_close(logits[0], logits[1], atol=1e-4, rtol=0)


def test_truth_measured_against_an_oracle(tmp_path):
    """bench's recall pass: an oracle finds every active neuron, and the true sparsity is the
    oracle's own; the dense mode measures the same true sparsity and no recall."""
    dense = build_model(load_checkpoint(tiny_llama(tmp_path, "silu")[0]))
    tokens = torch.randint(0, 256, (8,), generator=torch.Generator().manual_seed(6)).tolist()
    oracle = oracle_model(dense, 0.3, 0.02)
    recall, true_sparsity = measure_truth(oracle, tokens)
    assert recall == 1.0 and true_sparsity > 0.1
    layers = [b.ffn.stats.sparsity for b in oracle.layers]  # the oracle computes the true set
    assert true_sparsity == pytest.approx(sum(layers) / len(layers))
    dense_mode = sparse_transformer(
        dense.cfg,
        {k: v for k, v in dense.state_dict().items() if ".ffn." not in k},
        split_layers(dense, 0.3, 0.02),
        use_predictors=False,
    )
    assert measure_truth(dense_mode, tokens) == (None, pytest.approx(true_sparsity))
