"""The placement's GPU residents in the artifact engine: which parts run there, and the same
logits as the CPU-only engine.

Without CUDA the "GPU" is a second place on the CPU in float64: every hidden state, RoPE row,
KV cache entry and predictor input that has to reach the GPU must change dtype on the way, so a
missing move fails (a dtype mismatch) as it would fail on a GPU (a device mismatch). With CUDA
the last test runs the real thing.
"""

import pytest
import torch
from converter.converter_helpers import tiny_artifact
from tiny_models import split_layers, tiny_llama

from thermocline.errors import ThermoclineError
from thermocline.models import build_model, load_checkpoint
from thermocline.models.transformer import Place
from thermocline.runtime.half_weights import HalfLinear
from thermocline.runtime.placed import GpuResidents, place_residents
from thermocline.runtime.sparse_engine import load_artifact_model, sparse_transformer

pytestmark = pytest.mark.usefixtures("one_thread")
SECOND_PLACE = Place(torch.device("cpu"), torch.float64)
PROMPT, STEPS = 5, 6


def logits(model, tokens: torch.Tensor) -> torch.Tensor:
    """Prefill, then one token at a time, through the model's own cache."""
    cache = model.new_cache(1, tokens.shape[1])
    with torch.inference_mode():
        out = [model(tokens[:, :PROMPT], 0, cache)[0]]
        out += [model(tokens[:, i : i + 1], i, cache)[0] for i in range(PROMPT, tokens.shape[1])]
    return torch.cat(out)


def test_residents_from_placement_names():
    names = ["norms", "predictors", "layers.0.attention", "layers.0.kv_cache"]
    assert GpuResidents.parse(names + ["lm_head"], 3) == GpuResidents(1, True)
    assert GpuResidents.parse(["norms", "predictors"], 3) == GpuResidents(0, False)
    with pytest.raises(ThermoclineError, match="a prefix of the 3 layers"):
        GpuResidents.parse(["layers.1.attention"], 3)


@pytest.mark.parametrize("hot_fraction", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("with_predictors", [False, True], ids=["dense_mode", "predictors"])
@pytest.mark.parametrize("residents", [GpuResidents(1, False), GpuResidents(2, True)])
def test_placed_engine_equals_the_cpu_engine(tmp_path, hot_fraction, with_predictors, residents):
    dense = build_model(load_checkpoint(tiny_llama(tmp_path / "m", tie_word_embeddings=True)[0]))
    tensors = {k: v for k, v in dense.state_dict().items() if ".ffn." not in k}
    layers = split_layers(dense, hot_fraction, 0.02, predictor_rank=8 * with_predictors)
    cpu, placed = (
        sparse_transformer(dense.cfg, tensors, layers, with_predictors, hot_device="cpu")
        for _ in range(2)
    )
    place_residents(placed, residents, SECOND_PLACE)
    tokens = torch.randint(0, 256, (1, PROMPT + STEPS), generator=torch.Generator().manual_seed(5))
    out = logits(placed, tokens)
    assert out.dtype == torch.float32 and out.is_cpu  # logits come back for sampling
    torch.testing.assert_close(out, logits(cpu, tokens), atol=1e-4, rtol=0)
    # The same neurons computed: the predictor on the second place picks what it picks on the CPU.
    assert [b.ffn.stats.computed for b in placed.layers] == [
        b.ffn.stats.computed for b in cpu.layers
    ]
    for i, block in enumerate(placed.layers):
        dtype = torch.float64 if i < residents.layers else torch.float32
        assert block.attn.wqkv.weight.dtype == block.ffn_norm.weight.dtype == dtype
        if with_predictors:
            assert block.ffn.predictor.w1.dtype == dtype
    cache = placed.new_cache(1, 4)
    assert [k.dtype for k in cache.keys] == [
        torch.float64 if i < residents.layers else torch.float32 for i in range(2)
    ]
    assert (cache.k is None) == (residents.layers == 1)  # one block per place: k is for one
    head = torch.float64 if residents.lm_head else torch.float32
    assert placed.lm_head.weight.dtype == placed.norm.weight.dtype == head
    assert placed.embed.weight.dtype == torch.float32  # untied from lm_head, left on the CPU


def test_artifact_placement_is_honoured(tmp_path):
    path = tiny_artifact(
        tmp_path, ["norms", "predictors", "layers.0.attention", "layers.0.kv_cache", "lm_head"]
    )
    cpu = load_artifact_model(path, "fp16").model
    placed = load_artifact_model(path, "fp16", gpu=SECOND_PLACE).model
    assert cpu.fused_decode is not None and placed.fused_decode is None
    first, second = placed.layers
    assert first.attn.wqkv.weight.dtype == torch.float64 and first.ffn.hot_device.type == "cpu"
    assert isinstance(second.attn.wqkv, HalfLinear)  # the CPU layer: 16-bit weights, fp32 math
    assert placed.lm_head.weight.dtype == torch.float64
    tokens = torch.randint(0, 256, (1, PROMPT + STEPS), generator=torch.Generator().manual_seed(6))
    # 1e-2: the CPU engine prefills through torch's 16-bit GEMM (half_weights.py), fp16 sums.
    torch.testing.assert_close(logits(placed, tokens), logits(cpu, tokens), atol=1e-2, rtol=0)


def test_an_artifact_without_gpu_residents_runs_all_blocks_on_the_cpu(tmp_path):
    placed = load_artifact_model(tiny_artifact(tmp_path, []), "fp16", gpu=SECOND_PLACE).model
    assert all(isinstance(b.attn.wqkv, HalfLinear) for b in placed.layers)
    assert placed.new_cache(1, 4).k is not None
    assert placed.fused_decode is not None and placed.fused_decode.covers(placed)  # no hooks


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_artifact_placement_on_the_gpu(tmp_path):
    path = tiny_artifact(
        tmp_path, ["norms", "predictors", "layers.0.attention", "layers.0.kv_cache", "lm_head"]
    )
    tokens = torch.randint(0, 256, (1, PROMPT + STEPS), generator=torch.Generator().manual_seed(6))
    on_cpu = Place(torch.device("cpu"), torch.float32)
    # Dense mode: the same neurons on both sides, so the logits compare.
    cpu = load_artifact_model(path, "fp32", dense_mode=True, gpu=on_cpu).model
    placed = load_artifact_model(path, "fp32", dense_mode=True).model
    first, second = placed.layers
    assert first.attn.wqkv.weight.is_cuda and first.ffn.hot.up.is_cuda
    assert second.attn.wqkv.weight.is_cpu and placed.lm_head.weight.is_cuda
    # fp32 asked of the CPU; the GPU holds what the placement budgeted: the artifact's fp16
    assert first.attn.wqkv.weight.dtype == placed.lm_head.weight.dtype == torch.float16
    assert second.attn.wqkv.weight.dtype == torch.float32
    torch.testing.assert_close(logits(placed, tokens), logits(cpu, tokens), atol=2e-2, rtol=2e-2)
    # With predictors (on the GPU for the first layer, in fp16 there: a logit at the threshold
    # may fall either way), about as many neurons computed as on the CPU.
    cpu = load_artifact_model(path, "fp16", gpu=on_cpu).model
    placed = load_artifact_model(path, "fp16").model
    assert placed.layers[0].ffn.predictor.w1.is_cuda
    assert torch.isfinite(logits(placed, tokens)).all()
    logits(cpu, tokens)
    for ours, theirs in zip(placed.layers, cpu.layers, strict=True):
        assert ours.ffn.stats.computed == pytest.approx(theirs.ffn.stats.computed, rel=0.05)


def test_out_of_gpu_memory_is_one_clear_error(tmp_path, monkeypatch):
    from thermocline.runtime import sparse_engine

    def full(*args):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(sparse_engine, "place_residents", full)
    path = tiny_artifact(tmp_path, ["norms", "layers.0.attention", "layers.0.kv_cache"])
    with pytest.raises(ThermoclineError, match=r"1\.00 MiB budget.*smaller --vram-budget"):
        load_artifact_model(path, "fp16", gpu=SECOND_PLACE)
