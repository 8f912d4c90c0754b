"""Hybrid GPU-CPU decode vs a layer-wise split vs transformers offload (issue #7).

A ReLU LLaMA-7B-shaped model with random weights (speed depends on shapes, not values), a
predictor stand-in whose active sets follow a power law with the paper's skew (the top 20% of
neurons hold ~80% of the activations) at ~90% sparsity, and a VRAM budget (40% of the model's
bytes). Three engines on the same weights, batch-1 greedy decode:

  hybrid        attention, norms and lm_head on the GPU, then each layer's hottest neurons up
                to the budget (Triton); the cold neurons on the CPU (numba), computed while the
                GPU runs the hot ones: SparseFeedForward of thermocline.runtime.
  layer-wise    whole layers on the GPU in order until the budget is spent, the rest dense on
                the CPU, the hidden state moved between devices (llama.cpp's -ngl). The CPU
                layers run the engine's dense mode (its numba kernel over every neuron) with
                attention and lm_head in fp32: torch's 16-bit GEMV is 2-3x slower per byte on
                CPUs (BENCHMARKS.md), so fp16 there would flatter the hybrid.
                --layerwise-cpu torch runs the plain dense blocks in the model dtype instead.
  transformers  LlamaForCausalLM (hidden_act relu) dispatched as from_pretrained's
                device_map="auto" with max_memory = the budget: accelerate streams the CPU
                layers' weights to the GPU at every token (offload).

The engines, the random weights and the stand-in live in hybrid_engines.py beside this
script (why the hot set is each layer's top neurons rather than an ILP run: its docstring).

Known optimism, shared by all rows or in the hybrid's favour: the stand-in costs no GPU memory
and no time (a real predictor costs both); with random weights about half of the neurons it
marks active have a negative gate, so both sparse kernels skip their down rows, as they would
a predictor's false positives.

    python benchmarks/hybrid_7b.py [--json out.json]     # LLaMA-7B shape, needs a CUDA GPU
    python benchmarks/hybrid_7b.py --cpu-smoke           # tiny shape, every path on the CPU
    bash benchmarks/gpu_check.sh                         # with the GPU tests and kernel bandwidth
"""

from __future__ import annotations

import dataclasses
import gc
import json
import sys
import time
from dataclasses import dataclass

import numba
import torch
import typer
from hybrid_engines import (
    ActivationLaw,
    RandomModel,
    build_hf,
    build_hybrid,
    build_layerwise,
    calibrate_law,
    random_model,
    size,
)

from thermocline.errors import ThermoclineError
from thermocline.models import ModelConfig

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
ENGINES = ("hybrid", "layer-wise", "transformers")
LLAMA_7B = dict(layers=32, d_model=4096, n_heads=32, d_ff=11008, vocab=32000)
SMOKE = dict(layers=4, d_model=128, n_heads=4, d_ff=352, vocab=512)


@dataclass
class Settings:
    layers: int = 32
    d_model: int = 4096
    n_heads: int = 32
    d_ff: int = 11008
    vocab: int = 32000
    dtype: str = "fp16"
    budget: float = 0.4  # VRAM budget, as a share of the model's weight bytes
    sparsity: float = 0.9  # mean share of neurons the stand-in leaves inactive per token
    top_share: float = 0.8  # activation share the top 20% of neurons hold
    prompt_tokens: int = 8
    new_tokens: int = 32  # timed decode steps per engine
    hf_new_tokens: int = 8  # transformers offload moves GBs per token: fewer steps
    warmup: int = 3  # untimed decode steps first (Triton and numba compile here)
    engines: tuple[str, ...] = ENGINES
    layerwise_cpu: str = (
        "engine"  # CPU layers: "engine" (dense-mode kernel, fp32 attention) or "torch"
    )
    cpu_smoke: bool = False  # everything on the CPU (the "GPU" side is a second CPU executor)
    seed: int = 0

    def __post_init__(self) -> None:
        """Mistakes found before minutes go into building 13 GB of weights."""
        unknown = ", ".join(sorted(set(self.engines) - set(ENGINES)))
        checks = [
            (not unknown, f"unknown engine {unknown}: choose from {', '.join(ENGINES)}"),
            (self.dtype in DTYPES, f"--dtype is one of {', '.join(DTYPES)}"),
            (self.layerwise_cpu in ("engine", "torch"), "--layerwise-cpu is engine or torch"),
            (0 <= self.sparsity < 1, "--sparsity is in [0, 1)"),
            (self.budget > 0, "--budget is a positive share of the model's bytes"),
            (0 < self.top_share < 1, "--top-share is in (0, 1)"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ThermoclineError("; ".join(problems))

    @property
    def device(self) -> torch.device:
        return torch.device("cpu" if self.cpu_smoke else "cuda")

    def model_config(self) -> ModelConfig:
        steps = self.prompt_tokens + self.warmup + max(self.new_tokens, self.hf_new_tokens)
        return ModelConfig(
            arch="llama",
            vocab_size=self.vocab,
            d_model=self.d_model,
            n_layers=self.layers,
            n_heads=self.n_heads,
            n_kv_heads=self.n_heads,
            d_ff=self.d_ff,
            activation="relu",
            max_seq_len=steps + 1,
        )


# ---------------------------------------------------------------------------------------------
# Timing and the report


@dataclass
class EngineResult:
    engine: str
    decode_tokens_per_s: float
    gpu_weight_bytes: int
    peak_gpu_bytes: int | None  # torch.cuda.max_memory_allocated over build and run
    weight_bytes_per_token: float | None
    sparsity: float | None  # realized FFN sparsity of the timed steps
    notes: str
    speedup_vs_layerwise: float | None = None


def time_decode(engine, prompt: list[int], new_tokens: int, warmup: int) -> float:
    """Greedy batch-1 decode tokens/s after a prefill of `prompt`; warmup steps untimed."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    engine.start(len(prompt) + warmup + new_tokens)
    logits = engine(torch.tensor([prompt]), 0)[-1]
    position = len(prompt)
    for step in range(warmup + new_tokens):
        if step == warmup:
            sync()
            engine.reset_stats()
            start = time.perf_counter()
        logits = engine(torch.tensor([[int(logits.argmax())]]), position)[-1]
        position += 1
    sync()
    return new_tokens / (time.perf_counter() - start)


def build_engine(name: str, s: Settings, model: RandomModel, budget: int, law: ActivationLaw):
    if name == "hybrid":
        return build_hybrid(model, budget, s.device, law, s.seed)
    if name == "layer-wise":
        return build_layerwise(model, budget, s.device, s.layerwise_cpu)
    if name == "transformers":
        return build_hf(model, budget, s.device)
    raise ThermoclineError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(s: Settings) -> dict:
    """Build the model once, then build, time and free each engine in turn."""
    if not s.cpu_smoke and not torch.cuda.is_available():
        raise ThermoclineError(
            "hybrid_7b.py needs a CUDA GPU (torch.cuda.is_available() is False); "
            "--cpu-smoke runs its code paths on the CPU at a tiny shape"
        )
    cfg, dtype = s.model_config(), DTYPES[s.dtype]
    t0 = time.perf_counter()
    model = random_model(cfg, dtype, s.seed, s.device)
    budget = int(s.budget * model.nbytes)
    log(f"random weights: {size(model.nbytes)} in {time.perf_counter() - t0:.1f} s")
    law = calibrate_law(cfg.d_ff, s.sparsity, s.top_share)
    prompt = torch.randint(
        cfg.vocab_size, (s.prompt_tokens,), generator=torch.Generator().manual_seed(s.seed)
    ).tolist()
    results = []
    for name in s.engines:
        if s.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            engine = build_engine(name, s, model, budget, law)
        except ImportError as e:
            log(f"{name}: skipped, {e.name or e} is not installed (pip install -e '.[dev]')")
            continue
        log(f"{name}: built in {time.perf_counter() - t0:.1f} s ({engine.notes})")
        steps = s.hf_new_tokens if name == "transformers" else s.new_tokens
        rate = time_decode(engine, prompt, steps, s.warmup)
        peak = torch.cuda.max_memory_allocated() if s.device.type == "cuda" else None
        results.append(
            EngineResult(
                name, rate, engine.gpu_bytes, peak, engine.weight_bytes_per_token(),
                engine.sparsity(), engine.notes,
            )
        )  # fmt: skip
        log(f"{name}: {rate:.2f} tokens/s")
        del engine
        gc.collect()
        if s.device.type == "cuda":
            torch.cuda.empty_cache()
    base = next((r.decode_tokens_per_s for r in results if r.engine == "layer-wise"), None)
    for r in results:
        r.speedup_vs_layerwise = r.decode_tokens_per_s / base if base else None
    return {
        "device": torch.cuda.get_device_name() if s.device.type == "cuda" else "cpu (smoke)",
        "cpu_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(),  # the CPU sparse kernel's
        "settings": dataclasses.asdict(s),
        "model_bytes": model.nbytes,
        "budget_bytes": budget,
        "law": {
            "exponent": law.exponent,
            "density": float(law.probs.mean()),
            "top20_share": law.share(),
        },
        "results": [dataclasses.asdict(r) for r in results],
    }


def markdown(report: dict) -> str:
    s, law = report["settings"], report["law"]
    lines = [
        f"{report['device']}, {report['cpu_threads']} torch / {report['numba_threads']} numba "
        f"CPU threads: {s['layers']} layers, "
        f"d_model {s['d_model']}, d_ff {s['d_ff']}, vocab {s['vocab']}, {s['dtype']}, relu; "
        f"model {size(report['model_bytes'])}, VRAM budget {size(report['budget_bytes'])} "
        f"({s['budget']:.0%})",
        f"stand-in: power law exponent {law['exponent']:.3f}, density {law['density']:.3f} "
        f"(sparsity {1 - law['density']:.1%}), top 20% of neurons hold {law['top20_share']:.1%} "
        "of the activations",
        "",
        "| engine | decode tok/s | vs layer-wise | GPU weights | peak GPU alloc "
        "| weights read/token | read GB/s | FFN sparsity | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        rate, read = r["decode_tokens_per_s"], r["weight_bytes_per_token"]
        speedup, sparsity = r["speedup_vs_layerwise"], r["sparsity"]
        lines.append(
            f"| {r['engine']} | {rate:.2f} | {'' if speedup is None else f'{speedup:.2f}x'} "
            f"| {size(r['gpu_weight_bytes'])} | {size(r['peak_gpu_bytes'])} | {size(read)} "
            f"| {'' if read is None else f'{read * rate / 1e9:.1f}'} "
            f"| {'' if sparsity is None else f'{sparsity:.1%}'} | {r['notes']} |"
        )
    return "\n".join(lines)


def main(
    layers: int = typer.Option(None, help="transformer layers [32; smoke: 4]"),
    d_model: int = typer.Option(None, help="model width [4096; smoke: 128]"),
    n_heads: int = typer.Option(None, help="attention heads [32; smoke: 4]"),
    d_ff: int = typer.Option(None, help="FFN neurons per layer [11008; smoke: 352]"),
    vocab: int = typer.Option(None, help="vocabulary size [32000; smoke: 512]"),
    dtype: str = typer.Option("fp16", help="weight dtype: fp16, bf16 or fp32"),
    budget: float = typer.Option(0.4, help="VRAM budget as a share of the model's bytes"),
    sparsity: float = typer.Option(0.9, help="mean share of inactive neurons per token"),
    top_share: float = typer.Option(0.8, help="activation share the top 20% of neurons hold"),
    prompt_tokens: int = typer.Option(8),
    new_tokens: int = typer.Option(32, help="timed decode steps (hybrid, layer-wise)"),
    hf_new_tokens: int = typer.Option(8, help="timed decode steps for transformers offload"),
    warmup: int = typer.Option(3, help="untimed decode steps before timing"),
    engines: str = typer.Option(",".join(ENGINES), help="comma-separated subset to run"),
    layerwise_cpu: str = typer.Option("engine", help="layer-wise CPU layers: engine or torch"),
    cpu_smoke: bool = typer.Option(False, help="tiny shape, every path on the CPU (for CI)"),
    threads: int = typer.Option(0, help="CPU threads for torch and numba (0: all)"),
    seed: int = typer.Option(0),
    json_out: str = typer.Option(
        None, "--json", help="also write the report as JSON here ('-': stdout)"
    ),
) -> None:
    """Decode tokens/s of the hybrid engine, a layer-wise split and transformers offload on a
    random ReLU LLaMA-7B-shaped model at one VRAM budget (issue #7). Needs a CUDA GPU;
    --cpu-smoke runs every code path on the CPU at a tiny shape."""
    shape = SMOKE if cpu_smoke else LLAMA_7B
    given = dict(layers=layers, d_model=d_model, n_heads=n_heads, d_ff=d_ff, vocab=vocab)
    shape = {k: shape[k] if v is None else v for k, v in given.items()}
    if threads:
        torch.set_num_threads(threads)
        numba.set_num_threads(threads)
    try:
        settings = Settings(
            **shape, dtype=dtype, budget=budget, sparsity=sparsity, top_share=top_share,
            prompt_tokens=prompt_tokens, new_tokens=new_tokens, hf_new_tokens=hf_new_tokens,
            warmup=warmup, engines=tuple(e.strip() for e in engines.split(",") if e.strip()),
            layerwise_cpu=layerwise_cpu, cpu_smoke=cpu_smoke, seed=seed,
        )  # fmt: skip
        report = run(settings)
    except ThermoclineError as e:
        raise SystemExit(f"error: {e}") from None
    print(markdown(report))
    if json_out == "-":
        print(json.dumps(report, indent=2))
    elif json_out:
        with open(json_out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    typer.run(main)
