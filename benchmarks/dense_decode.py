"""Dense batch-1 decode on SmolLM2: thermocline vs transformers vs llama.cpp, fp32 and half.

    .venv/bin/python benchmarks/dense_decode.py [--new-tokens 128] [--json out.json]

Prompt of 5 tokens, 128 new greedy tokens, torch threads = cores. Thermocline's rows load the
model as `thermocline generate --dtype D` does (fp16/bf16: 16-bit weights, fp32 arithmetic;
one numba call per decoded token, runtime/fused_decode.py); "torch ops" is the same model
decoding through its torch modules instead, and with --torch-compile also through
`torch.compile(model, dynamic=True)` (compiling takes 1-2 min a dtype). llama.cpp runs when
llama-cpp-python is installed (`pip install '.[bench]'`), on F32/F16 GGUFs of the same
weights written with the `gguf` package. Prints a markdown table; no asserts on speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from thermocline.models import load_checkpoint
from thermocline.models.checkpoint import resolve_model_path
from thermocline.runtime.bench import DecodeTiming, bench_model
from thermocline.runtime.engine import load_model
from thermocline.runtime.llamacpp import gguf_baseline, llamacpp_decode

PROMPT = "The capital of France is"
HALF = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def time_transformers(path, dtype: torch.dtype, prompt: list[int], new_tokens: int) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=dtype
    ).eval()
    ids = torch.tensor([prompt])

    def run(n: int) -> float:
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return time.perf_counter() - start

    run(4)  # warm-up
    return new_tokens / (run(new_tokens + 1) - run(1))  # decode only: the prefill cancels out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--dtypes", default="fp32,bf16,fp16")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--torch-compile", action="store_true", help="add a torch.compile row")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    checkpoint = load_checkpoint(args.model)
    prompt = checkpoint.tokenizer.encode(PROMPT)
    path = resolve_model_path(args.model)
    rows: list[DecodeTiming] = []
    for name in args.dtypes.split(","):
        model = load_model(args.model, name).model  # 16-bit: weights in 16 bits, fp32 math
        rows.append(bench_model("thermocline dense", name, model, prompt, args.new_tokens))
        bytes_per_token = rows[-1].bytes_per_token
        model.fused_decode = None  # the same model, each decode step through torch's ops
        rows.append(bench_model("thermocline, torch ops", name, model, prompt, args.new_tokens))
        if args.torch_compile:
            compiled = torch.compile(model, dynamic=True)
            rows.append(
                bench_model("thermocline, torch.compile", name, compiled, prompt, args.new_tokens)
            )
        del model
        if not args.skip_transformers:
            hf = time_transformers(path, HALF[name], prompt, args.new_tokens)
            rows.append(
                DecodeTiming(
                    "transformers",
                    name,
                    hf,
                    float("nan"),
                    bytes_per_token,
                    args.new_tokens,
                    len(prompt),
                )
            )
        gguf_dtype = {"fp32": "fp32", "fp16": "fp16"}.get(name)
        if gguf_dtype and path.suffix == ".gguf":
            try:
                r = llamacpp_decode(
                    gguf_baseline(path, gguf_dtype), prompt, args.new_tokens, threads
                )
            except Exception as error:  # the baseline is optional: report, keep going
                print(f"llama.cpp {name}: skipped ({error})")
                continue
            rows.append(
                DecodeTiming(
                    f"llama.cpp {gguf_dtype.upper()}",
                    name,
                    r["decode_tokens_per_s"],
                    r["prefill_tokens_per_s"],
                    bytes_per_token,
                    args.new_tokens,
                    len(prompt),
                )
            )
    print(
        f"machine: {platform.processor() or platform.machine()}, {threads} cores, torch {torch.__version__}"
    )
    print("| engine | dtype | decode tok/s | bandwidth GB/s | prefill tok/s |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.name} | {r.dtype} | {r.decode_tokens_per_s:.1f} | {r.bandwidth_gb_s:.1f} | {r.prefill_tokens_per_s:.0f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.as_dict() for r in rows], f, indent=2)


if __name__ == "__main__":
    main()
