"""Predictor training shards: FFN inputs (fp16) and bit-packed active masks, all layers per file.

A shard `train/shard_{k:05d}.safetensors` holds, for every layer i, `layers.{i}.inputs`
float16 [n, d_model] and `layers.{i}.mask` uint8 [n, ceil(d_ff / 8)] packed with
numpy.packbits(axis=-1, bitorder="little"): neuron j of row r is bit j % 8 of byte j // 8.
The writer streams shards to disk from a background thread, so memory holds at most one
shard being filled and one being written whatever the number of training tokens.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from thermocline.errors import ThermoclineError

TRAIN_DIR = "train"


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.safetensors"


def pack_mask(mask: Tensor) -> Tensor:
    """bool [n, d_ff] -> uint8 [n, ceil(d_ff / 8)], little bit order."""
    return torch.from_numpy(np.packbits(mask.numpy(), axis=-1, bitorder="little"))


def unpack_mask(packed: Tensor, d_ff: int) -> Tensor:
    """uint8 [n, ceil(d_ff / 8)] -> bool [n, d_ff]."""
    bits = np.unpackbits(packed.numpy(), axis=-1, count=d_ff, bitorder="little")
    return torch.from_numpy(bits.view(np.bool_))


class ShardWriter:
    """Collects (inputs, mask) rows of every layer and writes a shard per `shard_tokens` rows."""

    def __init__(self, directory: Path, n_layers: int, shard_tokens: int):
        self.directory, self.n_layers, self.shard_tokens = directory, n_layers, shard_tokens
        directory.mkdir(parents=True, exist_ok=True)
        self.names: list[str] = []
        self.tokens = 0
        self._inputs: list[list[Tensor]] = [[] for _ in range(n_layers)]
        self._masks: list[list[Tensor]] = [[] for _ in range(n_layers)]
        self._buffered = 0
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: Future | None = None

    def add(self, inputs: list[Tensor], masks: list[Tensor]) -> None:
        """Rows for every layer: inputs fp16 [n, d_model], masks bool [n, d_ff] (CPU)."""
        for i in range(self.n_layers):
            self._inputs[i].append(inputs[i])
            self._masks[i].append(masks[i])
        self._buffered += len(inputs[0])
        if self._buffered >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        if not self._buffered:
            return
        inputs = [torch.cat(rows) for rows in self._inputs]
        masks = [torch.cat(rows) for rows in self._masks]
        self._inputs = [[] for _ in range(self.n_layers)]
        self._masks = [[] for _ in range(self.n_layers)]
        self.tokens += self._buffered
        self._buffered = 0
        self.wait()  # one shard in flight keeps memory bounded
        path = self.directory / shard_name(len(self.names))
        self.names.append(path.name)
        self._pending = self._pool.submit(_write_shard, path, inputs, masks)

    def wait(self) -> None:
        if self._pending is not None:
            self._pending.result()  # re-raises a failed write here
            self._pending = None

    def close(self) -> list[str]:
        """Write what is buffered, wait for the writes; the shard file names."""
        self.flush()
        self.wait()
        return self.names

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True)  # no write outlives the writer, even on an error


def _write_shard(path: Path, inputs: list[Tensor], masks: list[Tensor]) -> None:
    tensors = {}
    for i, (x, mask) in enumerate(zip(inputs, masks, strict=True)):
        tensors[f"layers.{i}.inputs"] = x.contiguous()
        tensors[f"layers.{i}.mask"] = pack_mask(mask)
    save_file(tensors, str(path))


def _shard_list(profile_dir: Path) -> tuple[list[str], int]:
    """The shard names and d_ff from profile.json (shards are read in the order written)."""
    path = profile_dir / "profile.json"
    try:
        meta = json.loads(path.read_text())
        return list(meta["shards"]), int(meta["model"]["config"]["d_ff"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ThermoclineError(
            f"cannot read the shard list from {path} ({error}); run `thermocline profile` first"
        ) from None


def iter_layer_shards(profile_dir: str | Path, layer: int) -> Iterator[tuple[Tensor, Tensor]]:
    """(inputs fp16 [n, d_model], mask bool [n, d_ff]) of one layer, shard by shard."""
    profile_dir = Path(profile_dir)
    names, d_ff = _shard_list(profile_dir)
    for name in names:
        path = profile_dir / TRAIN_DIR / name
        try:
            with safe_open(str(path), framework="pt") as f:
                inputs = f.get_tensor(f"layers.{layer}.inputs")
                packed = f.get_tensor(f"layers.{layer}.mask")
        except (OSError, SafetensorError) as error:
            raise ThermoclineError(f"cannot read training shard {path}: {error}") from None
        yield inputs, unpack_mask(packed, d_ff)


def load_layer_data(
    profile_dir: str | Path, layer: int, max_tokens: int | None = None
) -> tuple[Tensor, Tensor]:
    """All training rows of one layer (at most max_tokens): inputs fp16 [N, d], mask bool [N, d_ff]."""
    inputs, masks, total = [], [], 0
    for x, mask in iter_layer_shards(profile_dir, layer):
        if max_tokens is not None:
            x, mask = x[: max_tokens - total], mask[: max_tokens - total]
        inputs.append(x)
        masks.append(mask)
        total += len(x)
        if max_tokens is not None and total >= max_tokens:
            break
    if not inputs:
        raise ThermoclineError(
            f"{profile_dir} holds no training shards; profile with --train-tokens > 0"
        )
    return torch.cat(inputs), torch.cat(masks)
