"""GGUF files: config and tokenizer from the metadata, tensors dequantized with `gguf`."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGUFReader, ReaderTensor
from gguf.quants import dequantize
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from torch import Tensor

from thermocline.errors import ThermoclineError
from thermocline.models.checkpoint import Checkpoint, file_digest
from thermocline.models.config import ModelConfig
from thermocline.models.tokenizer import TextTokenizer

GGUF_ARCHS = ("llama", "qwen2")
CONTROL, USER_DEFINED = 3, 4  # llama.cpp token types that must never be split
# llama.cpp's pre-tokenizer names -> the split each one does before byte-level BPE.
GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")

# GGUF tensor name (minus ".weight"/".bias") -> canonical name; q/k/v are fused separately.
NAMES = {
    "token_embd": "embed",
    "output_norm": "norm",
    "output": "lm_head",
    "blk.{i}.attn_norm": "layers.{i}.attn_norm",
    "blk.{i}.ffn_norm": "layers.{i}.ffn_norm",
    "blk.{i}.attn_output": "layers.{i}.attn.wo",
    "blk.{i}.ffn_gate": "layers.{i}.ffn.gate",
    "blk.{i}.ffn_up": "layers.{i}.ffn.up",
    "blk.{i}.ffn_down": "layers.{i}.ffn.down",
}


def _field(reader: GGUFReader, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def _config(reader: GGUFReader) -> ModelConfig:
    arch = _field(reader, "general.architecture")
    if arch not in GGUF_ARCHS:
        raise ThermoclineError(
            f"unknown GGUF architecture {arch!r}; supported: {', '.join(GGUF_ARCHS)}"
        )
    n_heads = _field(reader, f"{arch}.attention.head_count")
    tokens = reader.fields["tokenizer.ggml.tokens"]
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    return ModelConfig(
        arch="llama",
        vocab_size=_field(reader, f"{arch}.vocab_size", len(tokens.data)),
        d_model=_field(reader, f"{arch}.embedding_length"),
        n_layers=_field(reader, f"{arch}.block_count"),
        n_heads=n_heads,
        n_kv_heads=_field(reader, f"{arch}.attention.head_count_kv", n_heads),
        d_ff=_field(reader, f"{arch}.feed_forward_length"),
        head_dim=_field(reader, f"{arch}.attention.key_length", 0),
        max_seq_len=_field(reader, f"{arch}.context_length", 2048),
        norm_eps=_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta=_field(reader, f"{arch}.rope.freq_base", 10000.0),
        tie_embeddings=not has_output,
        qkv_bias=arch == "qwen2",
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_ids=[] if eos is None else [eos],
    )


def _tokenizer(reader: GGUFReader, config: ModelConfig) -> TextTokenizer:
    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ThermoclineError(
            f"GGUF tokenizer {kind!r} is not supported yet (byte-level BPE 'gpt2' is)"
        )
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges", [])]
    tokenizer = Tokenizer(
        models.BPE(
            {t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False, ignore_merges=False
        )
    )
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    pre = _field(reader, "tokenizer.ggml.pre", "default")
    split = {"llama-bpe": LLAMA3_SPLIT, "llama3": LLAMA3_SPLIT, "qwen2": QWEN2_SPLIT}.get(
        pre, GPT2_SPLIT
    )
    steps = [pre_tokenizers.Split(Regex(split), behavior="isolated"), byte_level]
    if pre == "smollm":  # GPT-2's split with every digit on its own
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, k in zip(tokens, types, strict=True)
            if k == CONTROL
        ]
    )
    tokenizer.add_tokens(
        [
            AddedToken(t, normalized=False)
            for t, k in zip(tokens, types, strict=True)
            if k == USER_DEFINED
        ]
    )
    bos = tokens[config.bos_token_id] if config.bos_token_id is not None else ""
    if _field(reader, "tokenizer.ggml.add_bos_token", False) and bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, config.bos_token_id)],
        )
    eos = tokens[config.eos_token_ids[0]] if config.eos_token_ids else ""
    template = _field(reader, "tokenizer.chat_template")
    return TextTokenizer(tokenizer, template, list(config.eos_token_ids), bos, eos)


def _unpermute(weight: Tensor, n_heads: int) -> Tensor:
    """Undo llama.cpp's Q/K row order (interleaved RoPE pairs) back to HF's rotate-half."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_heads, rows // n_heads // 2, 2, *weight.shape[1:])
        .transpose(1, 2)
        .reshape(weight.shape)
    )


def _tensor_stream(
    path: Path,
    tensors: list[ReaderTensor],
    config: ModelConfig,
    arch: str,
    dtype: torch.dtype | None,
) -> Iterator[tuple[str, Tensor]]:
    by_name = {t.name: t for t in tensors}

    def read(name: str) -> Tensor:
        # Rows a block at a time, each cast to dtype as it comes: a whole embedding is never
        # held in float32. The bytes are read from the file, not through the reader's memory
        # map, whose touched pages would stay resident: the whole source file by the end.
        t, step = by_name[name], 4096
        rows, row_shape = t.data.shape[0], t.data.shape[1:]
        out = torch.empty(tuple(int(n) for n in reversed(t.shape)), dtype=dtype or torch.float32)
        for start in range(0, rows, step):
            count = min(step, rows - start)
            offset = t.data_offset + start * (t.n_bytes // rows)
            raw = np.fromfile(path, t.data.dtype, count * math.prod(row_shape), offset=offset)
            out[start : start + count] = torch.from_numpy(
                dequantize(raw.reshape(count, *row_shape), t.tensor_type)
            )
        return out

    for name in by_name:
        stem, _, kind = name.rpartition(".")
        parts = stem.split(".")
        if len(parts) == 3 and parts[2] in ("attn_q", "attn_k", "attn_v"):
            if parts[2] != "attn_q":
                continue  # fused with attn_q below
            q, k, v = (read(f"blk.{parts[1]}.attn_{p}.{kind}") for p in "qkv")
            if arch == "llama":  # llama.cpp permutes Q and K only for LLaMA
                q, k = _unpermute(q, config.n_heads), _unpermute(k, config.n_kv_heads)
            yield f"layers.{parts[1]}.attn.wqkv.{kind}", torch.cat([q, k, v])
            continue
        key = f"blk.{{i}}.{parts[2]}" if len(parts) == 3 else stem
        if key not in NAMES or kind not in ("weight", "bias"):
            if key.endswith("rope_freqs"):
                raise ThermoclineError("GGUF rope_freqs (scaled RoPE) is not supported yet")
            raise ThermoclineError(f"unexpected GGUF tensor {name}")
        yield (
            NAMES[key].replace("{i}", parts[1] if len(parts) == 3 else "") + f".{kind}",
            read(name),
        )


def load_gguf(path: Path, name: str) -> Checkpoint:
    try:
        reader = GGUFReader(path)
    except (ValueError, OSError, KeyError, IndexError) as error:
        raise ThermoclineError(f"{path}: not a valid GGUF file ({error})") from error
    if "tokenizer.ggml.tokens" not in reader.fields:
        raise ThermoclineError(f"{path}: GGUF without a tokenizer")
    config = _config(reader)
    arch = _field(reader, "general.architecture")
    types = sorted({t.tensor_type.name for t in reader.tensors})
    # The stream keeps the tensor list, not the reader: its metadata fields (a numpy view per
    # token and merge string, ~90 MiB for a 49k vocabulary) are freed once this returns.
    tensors = reader.tensors
    return Checkpoint(
        name=name,
        path=path,
        format="gguf",
        config=config,
        tokenizer=_tokenizer(reader, config),
        tensors=lambda dtype=None: _tensor_stream(path, tensors, config, arch, dtype),
        digest=file_digest([path]),
        source_dtype="+".join(types),
    )
