"""llama.cpp as a baseline: the same weights re-written as F32/F16 GGUF, timed via llama-cpp-python."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
from gguf.quants import dequantize

from thermocline.errors import ThermoclineError

TYPES = {"fp32": GGMLQuantizationType.F32, "fp16": GGMLQuantizationType.F16}


def write_unquantized_gguf(source: Path, out: Path, dtype: str) -> Path:
    """Copy a GGUF with every tensor dequantized to F32 or F16 (norms stay F32, as llama.cpp wants)."""
    reader = GGUFReader(source)
    arch = reader.fields["general.architecture"].contents()
    tmp = out.with_suffix(".tmp")
    writer = GGUFWriter(tmp, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), kind, sub_type=sub)
    writer.add_file_type(1 if dtype == "fp16" else 0)
    for t in reader.tensors:
        data = dequantize(t.data, t.tensor_type).astype(np.float32)
        if dtype == "fp16" and data.ndim == 2:
            data = data.astype(np.float16)
        writer.add_tensor(t.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out)
    return out


def llamacpp_decode(
    gguf_path: Path, prompt_tokens: list[int], new_tokens: int, threads: int
) -> dict[str, float]:
    """Decode tokens/s (batch 1, greedy) and prefill tokens/s of llama.cpp on a GGUF file."""
    try:
        from llama_cpp import Llama
    except ImportError as error:
        raise ThermoclineError(
            "llama.cpp baseline needs `pip install '.[bench]'` (llama-cpp-python)"
        ) from error
    llm = Llama(
        str(gguf_path),
        n_ctx=len(prompt_tokens) + new_tokens + 8,
        n_threads=threads,
        n_batch=512,
        verbose=False,
    )
    llm.eval(prompt_tokens)  # warm up
    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt_tokens)
    prefill_s = time.perf_counter() - start
    token, start = prompt_tokens[-1], time.perf_counter()
    for _ in range(new_tokens):
        token = llm.sample(temp=0.0)  # greedy, like ours
        llm.eval([token])
    decode_s = time.perf_counter() - start
    return {
        "decode_tokens_per_s": new_tokens / decode_s,
        "prefill_tokens_per_s": len(prompt_tokens) / prefill_s,
    }


def gguf_baseline(source: Path, dtype: str, cache_dir: Path | None = None) -> Path:
    """An F32/F16 twin of a GGUF, written once into cache_dir (default: the temp dir)."""
    if dtype not in TYPES:
        raise ThermoclineError(f"llama.cpp baseline dtypes: {', '.join(TYPES)}")
    folder = cache_dir or Path(tempfile.gettempdir()) / "thermocline-gguf"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{source.stem}.{dtype}.gguf"
    if not out.exists() or out.stat().st_mtime < source.stat().st_mtime:
        write_unquantized_gguf(source, out, dtype)
    return out
