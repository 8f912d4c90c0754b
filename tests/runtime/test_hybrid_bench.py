"""benchmarks/hybrid_7b.py cannot rot: its engines reproduce the dense model at a tiny shape.

Without CUDA the "GPU" side of each engine is a second CPU place (the hot neurons run on a
second CpuSparseFFN), so CI exercises the same assembly, placement and device moves as a GPU
run; with CUDA the last test runs the real thing at that shape (attention and Triton hot
neurons on the GPU, whole layers on the GPU, accelerate's offload).
"""

import importlib.util
import json

import hybrid_7b
import pytest
import torch
import typer
import typer.testing
from hybrid_engines import (
    build_hf,
    build_hybrid,
    build_layerwise,
    calibrate_law,
    dense_reference,
    random_model,
)

from thermocline.errors import ThermoclineError
from thermocline.models import KVCache

TINY = dict(layers=3, d_model=64, n_heads=4, d_ff=96, vocab=128)
PROMPT, STEPS = 5, 6


def tiny(dtype: str = "fp32", **overrides) -> hybrid_7b.Settings:
    fields = dict(TINY, dtype=dtype, cpu_smoke=True, prompt_tokens=PROMPT, new_tokens=STEPS)
    return hybrid_7b.Settings(**(fields | overrides))


def logits(engine, tokens: torch.Tensor) -> torch.Tensor:
    """Prefill then one decode step per token, the way time_decode drives an engine."""
    engine.start(tokens.shape[1])
    out = [engine(tokens[:, :PROMPT], 0)]
    out += [engine(tokens[:, i : i + 1], i) for i in range(PROMPT, tokens.shape[1])]
    return torch.cat(out).float().cpu()


def reference(model, tokens: torch.Tensor) -> torch.Tensor:
    net = dense_reference(model)
    cache = KVCache(model.cfg, 1, tokens.shape[1], net.embed.weight.dtype)
    with torch.inference_mode():
        out = [net(tokens[:, :PROMPT], 0, cache)[0]]
        out += [net(tokens[:, i : i + 1], i, cache)[0] for i in range(PROMPT, tokens.shape[1])]
    return torch.cat(out)


@pytest.fixture(scope="module")
def setup():
    s = tiny(new_tokens=64)  # positions for the longer runs below
    model = random_model(s.model_config(), torch.float32, 0, torch.device("cpu"))
    tokens = torch.randint(
        0, s.vocab, (1, PROMPT + STEPS), generator=torch.Generator().manual_seed(1)
    )
    return s, model, tokens, reference(model, tokens)


def test_law_has_the_papers_skew():
    law = calibrate_law(11008, 0.9, 0.8)
    assert law.share() == pytest.approx(0.8, abs=0.005)
    assert float(law.probs.mean()) == pytest.approx(0.1, rel=1e-3)
    assert bool((law.probs[:-1] >= law.probs[1:]).all()) and float(law.probs.max()) <= 1
    dense = calibrate_law(64, 0.0, 0.8)
    assert bool((dense.probs == 1).all())


@pytest.mark.parametrize("budget", [0.55, 0.75, 2.0])  # attention and lm_head: 48%
def test_hybrid_with_an_oracle_equals_dense(setup, budget):
    s, model, tokens, expected = setup
    law = calibrate_law(s.d_ff, 0.9, 0.8)
    engine = build_hybrid(model, int(budget * model.nbytes), torch.device("cpu"), law)
    assert engine.gpu_bytes <= budget * model.nbytes
    ffns = engine.sparse_ffns
    if budget < 1:
        assert 0 < ffns[0].hot.n < s.d_ff
    else:
        assert ffns[0].hot.n == s.d_ff
    for f in ffns:
        f.predictor = f.true_mask
    torch.testing.assert_close(logits(engine, tokens), expected, atol=1e-4, rtol=0)
    assert 0.2 < engine.sparsity() < 0.9  # relu skips about half of the neurons for real


def test_hybrid_stand_in_at_zero_sparsity_equals_dense(setup):
    s, model, tokens, expected = setup
    engine = build_hybrid(
        model, int(0.5 * model.nbytes), torch.device("cpu"), calibrate_law(s.d_ff, 0.0, 0.8)
    )
    torch.testing.assert_close(logits(engine, tokens), expected, atol=1e-4, rtol=0)


def test_hybrid_stand_in_draws_the_laws_sparsity(setup):
    s, model, tokens, _ = setup
    law = calibrate_law(s.d_ff, 0.9, 0.8)
    engine = build_hybrid(model, int(0.5 * model.nbytes), torch.device("cpu"), law)
    logits(engine, torch.cat([tokens] * 4, dim=1))
    assert engine.sparsity() == pytest.approx(0.9, abs=0.03)


def test_hybrid_budget_must_hold_attention(setup):
    _, model, _, _ = setup
    with pytest.raises(ThermoclineError, match="raise --budget"):
        build_hybrid(model, 1000, torch.device("cpu"), calibrate_law(96, 0.9, 0.8))


@pytest.mark.parametrize("cpu_mode", ["engine", "torch"])
@pytest.mark.parametrize("budget", [0.0, 0.4, 2.0])
def test_layerwise_equals_dense(setup, cpu_mode, budget):
    s, model, tokens, expected = setup
    engine = build_layerwise(model, int(budget * model.nbytes), torch.device("cpu"), cpu_mode)
    gpu_layers = {0.0: 0, 0.4: 1, 2.0: s.layers}[budget]
    assert engine.notes.startswith(f"{gpu_layers}/{s.layers} layers")
    assert engine.gpu_bytes <= budget * model.nbytes
    kernel_layers = len(engine.sparse_ffns)  # the engine's dense mode on the CPU layers
    assert kernel_layers == (s.layers - gpu_layers if cpu_mode == "engine" else 0)
    torch.testing.assert_close(logits(engine, tokens), expected, atol=1e-4, rtol=0)


def test_fp16_engines_track_dense():
    """16-bit weights: the kernels accumulate in fp32, the CPU layers of the split run fp32."""
    s = tiny("fp16", new_tokens=64)
    model = random_model(s.model_config(), torch.float16, 0, torch.device("cpu"))
    tokens = torch.randint(
        0, s.vocab, (1, PROMPT + STEPS), generator=torch.Generator().manual_seed(2)
    )
    expected = reference(model, tokens).float()
    hybrid = build_hybrid(
        model, int(0.6 * model.nbytes), torch.device("cpu"), calibrate_law(s.d_ff, 0.9, 0.8)
    )
    for f in hybrid.sparse_ffns:
        f.predictor = f.true_mask
    layerwise = build_layerwise(model, int(0.4 * model.nbytes), torch.device("cpu"))
    assert layerwise.net.layers[-1].attn_norm.weight.dtype == torch.float32
    all_cpu = build_layerwise(model, 0, torch.device("cpu"))  # from a 16-bit embedding straight
    assert all_cpu.notes.startswith("0/")  # to fp32 CPU layers
    for engine in (hybrid, layerwise, all_cpu):
        torch.testing.assert_close(logits(engine, tokens), expected, atol=2e-2, rtol=1e-2)


def test_transformers_twin_equals_dense(setup):
    pytest.importorskip("accelerate")
    _, model, tokens, expected = setup
    engine = build_hf(model, 0, torch.device("cpu"))
    torch.testing.assert_close(logits(engine, tokens), expected, atol=1e-4, rtol=1e-4)


def test_cli_smoke_writes_the_report(tmp_path):
    out = tmp_path / "report.json"
    shape = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    args = [
        "--cpu-smoke",
        *shape,
        "--new-tokens=2",
        "--hf-new-tokens=1",
        "--warmup=1",
        "--budget=0.6",
    ]
    app = typer.Typer()
    app.command()(hybrid_7b.main)
    result = typer.testing.CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    engines = [r["engine"] for r in report["results"]]
    assert engines[:2] == ["hybrid", "layer-wise"]
    assert report["results"][1]["speedup_vs_layerwise"] == 1.0
    assert "| hybrid |" in result.stdout
    assert report["law"]["top20_share"] == pytest.approx(0.8, abs=0.01)


def test_without_cuda_one_clear_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ThermoclineError, match="needs a CUDA GPU.*--cpu-smoke"):
        hybrid_7b.run(tiny(cpu_smoke=False))
    with pytest.raises(ThermoclineError, match="unknown engine"):
        tiny(engines=("hybrid", "llama.cpp"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_engines_on_the_gpu_equal_dense(setup):
    s, model, tokens, expected = setup
    cuda = torch.device("cuda")
    drawn = random_model(s.model_config(), torch.float16, 0, cuda).ffn[0].up  # drawn on the GPU
    assert drawn.is_cpu and drawn.dtype == torch.float16
    assert 0.8 < float(drawn.float().std()) * s.d_model**0.5 < 1.2
    engine = build_hybrid(model, int(0.6 * model.nbytes), cuda, calibrate_law(s.d_ff, 0.9, 0.8))
    for f in engine.sparse_ffns:
        f.predictor = f.true_mask
    assert engine.net.layers[0].attn.wqkv.weight.is_cuda and engine.sparse_ffns[0].hot.up.is_cuda
    torch.testing.assert_close(logits(engine, tokens), expected, atol=1e-3, rtol=1e-3)
    layerwise = build_layerwise(model, int(0.5 * model.nbytes), cuda)
    torch.testing.assert_close(logits(layerwise, tokens), expected, atol=1e-3, rtol=1e-3)
    if importlib.util.find_spec("accelerate"):  # device_map offload: some layers stream in
        offload = build_hf(model, int(0.5 * model.nbytes), cuda)
        assert 0 < offload.gpu_bytes <= 0.5 * model.nbytes, offload.notes
        torch.testing.assert_close(logits(offload, tokens), expected, atol=1e-3, rtol=1e-3)
