"""The safetensors container, written tensor by tensor and parsed with checks.

safetensors' own writer needs every tensor in memory at once; this one plans the header
from shapes alone, writes it, then places each tensor's bytes at its offset as the source
yields it, so a conversion holds about one layer in memory. The layout is plain
safetensors: an 8-byte little-endian header length N, N bytes of JSON (padded with spaces
to a multiple of 8), then the tensors back to back. `header_digest` in the metadata is the
sha256 of the rest of the header, so a damaged header is caught before anything is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from thermocline.errors import ThermoclineError

MAX_HEADER_BYTES = 100 << 20  # a sane header is a few MB (the tokenizer dominates)
DIGEST_KEY = "header_digest"
CHUNK_ELEMENTS = 1 << 22  # tensors are cast and written 4M elements at a time
ST_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int32: "I32",
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return torch.Size(self.shape).numel() * self.dtype.itemsize


def header_digest(header: dict[str, Any]) -> str:
    """sha256 of the header's canonical JSON, without the digest itself."""
    meta = {k: v for k, v in header.get("__metadata__", {}).items() if k != DIGEST_KEY}
    canonical = {**header, "__metadata__": meta}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def build_header(specs: list[TensorSpec], metadata: dict[str, str]) -> dict[str, Any]:
    """Header with the tensors back to back in the order given, and its digest."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for spec in specs:
        header[spec.name] = {
            "dtype": ST_DTYPES[spec.dtype],
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + spec.nbytes],
        }
        offset += spec.nbytes
    header["__metadata__"][DIGEST_KEY] = header_digest(header)
    return header


def encode_header(header: dict[str, Any]) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # tensors start 8-byte aligned
    return struct.pack("<Q", len(text)) + text


class StreamingWriter:
    """Writes a planned safetensors file tensor by tensor, in any order, atomically.

    Use as a context manager; on a clean exit every planned tensor must have been written,
    then the temporary file replaces `path`. On an error the temporary file is removed.
    """

    def __init__(self, path: Path, specs: list[TensorSpec], metadata: dict[str, str]):
        self.path = Path(path)
        self.specs = {s.name: s for s in specs}
        header = build_header(specs, metadata)
        raw = encode_header(header)
        self.data_start = len(raw)
        self.offsets = {s.name: header[s.name]["data_offsets"][0] for s in specs}
        self.size = self.data_start + sum(s.nbytes for s in specs)
        self.written: set[str] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, self.tmp = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        self.file = os.fdopen(handle, "wb")
        self.file.write(raw)

    def write(self, name: str, tensor: Tensor) -> None:
        spec = self.specs.get(name)
        if spec is None:
            raise ThermoclineError(f"{self.path}: tensor {name} is not in the planned layout")
        if tuple(tensor.shape) != spec.shape:
            raise ThermoclineError(
                f"tensor {name} has shape {tuple(tensor.shape)}, the config implies {spec.shape}"
            )
        if name in self.written:
            raise ThermoclineError(f"tensor {name} appears twice in the source")
        self.file.seek(self.data_start + self.offsets[name])
        flat = tensor.detach().reshape(-1)
        for start in range(0, flat.numel(), CHUNK_ELEMENTS):  # casts in pieces: no full copy
            piece = flat[start : start + CHUNK_ELEMENTS].to("cpu", spec.dtype).contiguous()
            self.file.write(piece.view(torch.uint8).numpy().data)
        self.written.add(name)

    def __enter__(self) -> StreamingWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if error is None:
                missing = [n for n in self.specs if n not in self.written]
                if missing:
                    raise ThermoclineError(f"the source lacks tensors: {', '.join(missing[:5])}")
                self.file.truncate(self.size)  # trailing empty tensors write nothing
                self.file.flush()
                os.fsync(self.file.fileno())
                self.file.close()
                os.replace(self.tmp, self.path)
        finally:
            self.file.close()
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)


def read_header(path: Path) -> tuple[dict[str, Any], int, int]:
    """(header, byte where the data starts, data length) after checking the container."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ThermoclineError(f"{path}: only {size} bytes; truncated or not a .thermo file")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise ThermoclineError(
                f"{path}: header length {length} exceeds {MAX_HEADER_BYTES} bytes; not a .thermo file"
            )
        if 8 + length > size:
            raise ThermoclineError(
                f"{path}: header of {length} bytes runs past the end of the file ({size} bytes); "
                "the file is truncated: convert again"
            )
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ThermoclineError(
            f"{path}: header is not valid JSON ({error}); the file is corrupt"
        ) from None
    if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict):
        raise ThermoclineError(f"{path}: header has no metadata; not a .thermo file")
    return header, 8 + length, size - 8 - length


def check_digest(path: Path, header: dict[str, Any]) -> None:
    stored = header["__metadata__"].get(DIGEST_KEY)
    actual = header_digest(header)
    if stored != actual:
        raise ThermoclineError(
            f"{path}: header digest mismatch (stored {str(stored)[:16]}, computed {actual[:16]}); "
            "the header is corrupt or was edited: convert again"
        )
