"""Profiling throughput vs dense prefill throughput, side by side on the same machine.

Same model, corpus windows, seq-len, batch and token count for every row:
- dense prefill: `model(windows)`, the plain forward with logits (what prefill computes);
- dense blocks: embeddings + blocks only, no lm_head, no hooks (what the profiler runs);
- profile: `profile_model` end to end (threshold calibration, counting pass with the hooks
  and the training-shard writing, statistics, plot), and its counting pass alone.
Prefill runs again at the end: the spread of the two shows how noisy the machine is.

    .venv/bin/python benchmarks/profile_speed.py [--tokens 16384] [--calib-tokens 2048] [--out DIR]

Prints a markdown table. Times are wall-clock; no asserts on speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from thermocline.models import build_model, load_checkpoint
from thermocline.profiler import ProfileConfig, profile_model
from thermocline.profiler.collect import run_blocks
from thermocline.profiler.datasets_corpus import corpus_tokens


@torch.inference_mode()
def timed_forward(forward, windows: torch.Tensor, batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(windows), batch):
        forward(windows[i : i + batch])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--corpus", default="wikitext-2")
    parser.add_argument("--tokens", type=int, default=16_384)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--calib-tokens", type=int, default=2048)
    parser.add_argument("--train-tokens", type=int, default=4096)
    parser.add_argument("--out", type=Path, help="Keep the profile here (default: a temp folder).")
    args = parser.parse_args()

    checkpoint = load_checkpoint(args.model)
    model = build_model(checkpoint, torch.float32)
    ids = corpus_tokens(args.corpus, "calibration", checkpoint.tokenizer, args.tokens)
    n = len(ids) // args.seq_len
    windows = ids[: n * args.seq_len].view(n, args.seq_len)
    tokens = windows.numel()
    load_before = os.getloadavg()

    rows = [("dense prefill (forward with logits)", timed_forward(model, windows, args.batch))]
    rows.append(
        (
            "dense blocks only (no lm_head, no hooks)",
            timed_forward(lambda w: run_blocks(model, w), windows, args.batch),
        )
    )
    config = ProfileConfig(
        tokens=args.tokens,
        seq_len=args.seq_len,
        batch=args.batch,
        calib_tokens=args.calib_tokens,
        train_tokens=args.train_tokens,
        target_sparsity=0.5,
        progress=False,
        force=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = profile_model(args.model, args.corpus, args.out or Path(tmp) / "profile", config)
        meta = json.loads((out / "profile.json").read_text())
    timings = meta["timings"]
    rows.append(
        (
            f"profile end to end (calibration on {meta['calib_tokens']} tokens, counting, writing)",
            meta["seconds"],
        )
    )
    rows.append(("  of which the counting pass (hooks + shard writing)", timings["collect"]))
    rows.append(("dense prefill again", timed_forward(model, windows, args.batch)))

    prefill = tokens / rows[0][1]
    print(
        f"{args.model}, {tokens} tokens of {args.corpus} (calibration), seq-len {args.seq_len}, "
        f"batch {args.batch}, fp32, {meta['device']}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}; load average {load_before[0]:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after; {meta['train_tokens']} training tokens written\n"
    )
    print("| measurement | seconds | tokens/s | vs first prefill |")
    print("|---|---:|---:|---:|")
    for name, seconds in rows:
        print(
            f"| {name} | {seconds:.1f} | {tokens / seconds:,.0f} | {tokens / seconds / prefill:.0%} |"
        )
    print(
        f"\ncalibration {timings['calibrate']:.1f} s (each block once, dense, over the calibration "
        f"tokens, then its down projection again on the thresholded h), counting {timings['collect']:.1f} s, statistics + plot {timings['write']:.1f} s"
    )


if __name__ == "__main__":
    main()
