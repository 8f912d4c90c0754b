"""Conversion of SmolLM2 to a .thermo file: wall time and peak memory of a fresh process.

    .venv/bin/python benchmarks/convert_smollm2.py [--dtype fp16] [--placement P]
        [--predictors DIR] [--profile DIR] [--out results.md]

Each measurement runs in its own child process; its peak RSS comes from wait4 (the kernel's
ru_maxrss of that child alone). A child that only imports torch and the converter, opens the
checkpoint and plans the layout (no weight read) gives the baseline, reported beside the
conversion's own peak. Writes a markdown table; no asserts.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMPORTS = "import thermocline.converter.writer"
# Everything conversion does before reading a weight: open the checkpoint (GGUF metadata,
# tokenizer) and plan the layout (from the config alone). Parsing the GGUF metadata dominates:
# gguf's reader makes a numpy view per token and merge string (~160 MiB for SmolLM2's 49k
# vocabulary, freed once the tokenizer is built); none of it grows with the model.
BASELINE = (
    "from thermocline.converter.layout import canonical_shapes; "
    "from thermocline.models import load_checkpoint; "
    "checkpoint = load_checkpoint({model!r}); canonical_shapes(checkpoint.config)"
)
CONVERT = "from thermocline.converter import convert; convert({model!r}, {out!r}, {placement!r}, {predictors!r}, {profile!r}, {dtype!r})"


def run_child(code: str) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of `python -c code` in a fresh process."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code])
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"child failed ({child.returncode}): {code}")
    return time.perf_counter() - start, usage.ru_maxrss * 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="fp16")
    parser.add_argument("--placement")
    parser.add_argument("--predictors")
    parser.add_argument("--profile")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()

    mib = 2**20
    with tempfile.TemporaryDirectory() as tmp:
        target = str(Path(tmp) / "model.thermo")
        _, import_rss = run_child(IMPORTS)
        base_s, base_rss = run_child(BASELINE.format(model=args.model))
        fields = dict(
            model=args.model,
            out=target,
            placement=args.placement,
            predictors=args.predictors,
            profile=args.profile,
            dtype=args.dtype,
        )
        conv_s, conv_rss = run_child(CONVERT.format(**fields))
        size = Path(target).stat().st_size
    options = "".join(
        f" --{k} {v}" for k in ("placement", "predictors", "profile") if (v := getattr(args, k))
    )
    command = (
        f"thermocline convert --model {args.model}{options} --out model.thermo --dtype {args.dtype}"
    )
    rows = [
        ("output file", f"{size / mib:.1f} MiB"),
        ("conversion wall time", f"{conv_s:.1f} s (baseline process alone: {base_s:.1f} s)"),
        (
            "peak RSS, conversion process",
            f"{conv_rss / mib:.0f} MiB ({conv_rss / size:.2f}x the output)",
        ),
        ("peak RSS, python + torch + thermocline imports", f"{import_rss / mib:.0f} MiB"),
        (
            "peak RSS, baseline: imports + open checkpoint + plan layout",
            f"{base_rss / mib:.0f} MiB",
        ),
        (
            "peak RSS above baseline",
            f"{(conv_rss - base_rss) / mib:.0f} MiB ({(conv_rss - base_rss) / size:.2f}x the output)",
        ),
    ]
    text = "\n".join(
        [
            f"## Converter: {args.model} -> .thermo ({args.dtype})",
            "",
            f"Command: `{command}` (measured as `python benchmarks/convert_smollm2.py`: the same "
            "`convert()` in a fresh child process, peak RSS from wait4).",
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
            f"torch threads default, Python {platform.python_version()}.",
            "",
            "| measure | value |",
            "|---|---|",
            *[f"| {k} | {v} |" for k, v in rows],
            "",
        ]
    )
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
