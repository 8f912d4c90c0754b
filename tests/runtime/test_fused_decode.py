"""The fused one-token step against the model's own blocks in torch: what the step adds to the
transformers comparison in tests/models (16-bit weights, thresholds, biases, the artifact
engine's sparse FFNs with and without predictors, refusals)."""

import numpy as np
import pytest
import torch
from tiny_models import split_layers, tiny_llama, tiny_opt

from thermocline.models import build_model, load_checkpoint
from thermocline.models.config import ModelConfig
from thermocline.models.transformer import KVCache, Place, Transformer
from thermocline.runtime.bench import measure_truth, reset_stats
from thermocline.runtime.engine import load_model
from thermocline.runtime.fused_decode import FusedDecode, use_fused_decode, why_not_fusable
from thermocline.runtime.placed import CPU
from thermocline.runtime.sparse_engine import sparse_transformer

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 12


def assert_fused_equals_blocks(model: Transformer) -> None:
    """Prefill 3 tokens, then decode one at a time with and without the fused step; sparse
    FFNs count the same neurons either way."""
    fused = model.fused_decode
    assert fused is not None
    tokens = torch.randint(
        3, model.cfg.vocab_size, (1, 3 + STEPS), generator=torch.Generator().manual_seed(2)
    )
    logits = []
    computed = []
    for step in (fused, None):
        model.fused_decode = step
        cache = KVCache(model.cfg, 1, 3 + STEPS, torch.float32)
        with torch.inference_mode():
            model(tokens[:, :3], 0, cache)
            reset_stats(model)
            logits.append(
                torch.cat([model(tokens[:, p : p + 1], p, cache) for p in range(3, 3 + STEPS)])
            )
        stats = [b.ffn.stats for b in model.layers if hasattr(b.ffn, "stats")]
        computed.append([(s.tokens, s.computed) for s in stats])
    model.fused_decode = fused
    torch.testing.assert_close(logits[0], logits[1], atol=1e-4, rtol=1e-4)
    assert computed[0] == computed[1]


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_engine_fuses_dense_llama_models(tmp_path, dtype):
    path, _ = tiny_llama(tmp_path / "m", kind="qwen2")  # with q/k/v biases
    assert_fused_equals_blocks(load_model(path, dtype).model)


def test_thresholds_are_read_at_every_step(tmp_path):
    model = load_model(tiny_llama(tmp_path / "m")[0]).model
    for i, block in enumerate(model.layers):
        block.ffn.threshold = 0.02 * (i + 1)
    assert_fused_equals_blocks(model)


def test_output_and_mlp_biases():
    cfg = ModelConfig(
        arch="llama", vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
        d_ff=48, max_seq_len=64, activation="gelu", o_bias=True, mlp_bias=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Transformer(cfg).requires_grad_(False).eval()
    for block in model.layers:
        for linear in (block.attn.wo, block.ffn.up, block.ffn.down):
            linear.bias.normal_()
    assert use_fused_decode(model)
    assert_fused_equals_blocks(model)


def artifact_engine(path, hot_fraction: float, threshold: float, with_predictors: bool):
    """The artifact engine's model over a tiny model's weights, CPU only; predictors random."""
    dense = build_model(load_checkpoint(path))
    layers = split_layers(dense, hot_fraction, threshold, predictor_rank=8 * with_predictors)
    tensors = {k: v for k, v in dense.state_dict().items() if ".ffn." not in k}
    model = sparse_transformer(dense.cfg, tensors, layers, with_predictors, hot_device="cpu")
    assert use_fused_decode(model)
    return model


@pytest.mark.parametrize("hot_fraction", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("with_predictors", [False, True], ids=["dense_mode", "predictors"])
def test_artifact_engine(tmp_path, hot_fraction, with_predictors):
    model = artifact_engine(tiny_llama(tmp_path / "m")[0], hot_fraction, 0.02, with_predictors)
    assert_fused_equals_blocks(model)
    sparsity = [b.ffn.stats.sparsity for b in model.layers]
    assert all(0.2 < s < 0.8 for s in sparsity) if with_predictors else sparsity == [0, 0]
    assert model.fused_decode.pdtype.dtype == np.int16  # fp16 predictor weights, as stored


def test_counts_the_down_rows_it_reads(tmp_path):
    """The down rows of the computed neurons the threshold kept: the truly active ones the
    predictor found, as the recall pass counts them through the torch blocks."""
    model = artifact_engine(tiny_llama(tmp_path / "m")[0], 0.3, 0.02, with_predictors=True)
    tokens = torch.randint(3, 256, (STEPS,), generator=torch.Generator().manual_seed(4)).tolist()
    cache = KVCache(model.cfg, 1, STEPS, torch.float32)
    with torch.inference_mode():
        for position, token in enumerate(tokens):  # one token at a time: the fused step
            model(torch.tensor([[token]]), position, cache)
    fused = [(b.ffn.stats.computed, b.ffn.stats.down_rows) for b in model.layers]
    measure_truth(model, tokens)
    assert [down_rows for _, down_rows in fused] == [b.ffn.stats.found for b in model.layers]
    assert all(0 < down_rows < computed for computed, down_rows in fused)


def test_predictor_weights_that_fp16_cannot_hold_are_read_in_fp32(tmp_path):
    model = artifact_engine(tiny_llama(tmp_path / "m")[0], 0.3, 0.02, with_predictors=True)
    model.layers[1].ffn.predictor.w2[0, 0] += 1e-4  # between two fp16 values
    assert use_fused_decode(model) and model.fused_decode.pdtype.dtype == np.float32
    assert_fused_equals_blocks(model)


def test_steps_aside_when_the_model_changes(tmp_path):
    """Hooks (the profiler's), swapped FFNs and recall measurement need the torch blocks."""
    model = artifact_engine(tiny_llama(tmp_path / "m")[0], 0.3, 0.0, with_predictors=True)
    fused, cache = model.fused_decode, KVCache(model.cfg, 1, 4, torch.float32)
    assert fused.covers(model)
    seen = []
    handle = model.layers[1].ffn_norm.register_forward_pre_hook(lambda m, args: seen.append(1))
    assert not fused.covers(model)
    with torch.inference_mode():
        model(torch.tensor([[5]]), 0, cache)
    assert seen == [1]
    handle.remove()
    model.layers[0].ffn.measure_recall = True
    assert not fused.covers(model)
    model.layers[0].ffn.measure_recall = False
    model.layers[0].ffn = torch.nn.Identity()
    assert not fused.covers(model)


def test_refuses_what_it_cannot_run(tmp_path):
    model = load_model(tiny_llama(tmp_path / "m")[0]).model
    step = model.fused_decode
    x = torch.randn(1, 1, model.cfg.d_model)
    cfg = model.cfg
    for cache, start in [
        (KVCache(cfg, 1, 4, torch.float32), 4),  # past the cache's end
        (KVCache(cfg, 2, 4, torch.float32), 0),  # batch 2
        (KVCache(cfg, 1, 4, torch.float16), 0),
        (KVCache(cfg, 1, 4, places=[CPU, Place(CPU.device, torch.float64)]), 0),  # layers apart
    ]:
        with pytest.raises(ValueError, match="one token and a batch-1 fp32 CPU cache"):
            step(x, start, cache)
    opt = load_model(tiny_opt(tmp_path / "opt")[0]).model
    assert opt.fused_decode is None and "opt" in why_not_fusable(opt)
    with pytest.raises(ValueError, match="cannot fuse"):
        FusedDecode(opt)
    model.layers[0].ffn = torch.nn.Identity()
    assert why_not_fusable(model) == "the FFNs are neither dense nor neuron-sparse on the CPU"
    oracle = artifact_engine(tmp_path / "m", 0.3, 0.0, with_predictors=False)
    oracle.layers[1].ffn.predictor = oracle.layers[1].ffn.true_mask  # not a stored predictor
    assert why_not_fusable(oracle) is not None
