"""Corpus -> token ids for profiling: plain text, jsonl/json/parquet files, folders, hub names.

- A known corpus (`wikitext-2`) or a plain-text file: `thermocline.corpus.read_text` and its
  split rule (first 80% of the bytes, cut at an article start), tokenized as one text (in
  pieces cut at line ends, only as far as the tokens needed).
- A .jsonl/.json/.parquet file, or a folder of such files or of .txt files (one document per
  file), read with the `datasets` library; a hub dataset name `NAME` or `NAME:CONFIG` (its
  "train" split) where the Hugging Face Hub is reachable. The split is document-wise: the
  first 80% of the documents (rows, in order) are calibration, the rest eval. Documents are
  tokenized one by one (BOS per document where the tokenizer adds one) and concatenated.
Only the first `max_tokens` tokens are produced, so memory is bounded by that, not the corpus.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor

from thermocline.corpus import CALIBRATION_SHARE, KNOWN_CORPORA, SPLITS, read_text
from thermocline.errors import ThermoclineError
from thermocline.models.tokenizer import TextTokenizer

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
FOLDER_BUILDERS = {**FILE_BUILDERS, ".txt": "text"}  # a folder of .txt: one document per file
HUB_TIMEOUT_S = 3.0
DOCS_PER_BATCH = 256
MIN_PIECE_CHARS = 1 << 16  # plain text is tokenized in pieces of at least this many characters


def _is_plain_text(spec: str) -> bool:
    return spec in KNOWN_CORPORA or (
        Path(spec).is_file() and Path(spec).suffix not in FILE_BUILDERS
    )


def _data_files(folder: Path) -> tuple[str, list[str]]:
    """The builder and files of a folder: all of one kind, sorted by name."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in FOLDER_BUILDERS)
    kinds = {FOLDER_BUILDERS[p.suffix] for p in files}
    if len(kinds) != 1:
        found = ", ".join(sorted(kinds)) or "none"
        raise ThermoclineError(
            f"folder {folder} must hold files of one kind ({', '.join(FOLDER_BUILDERS)}); found: {found}"
        )
    return kinds.pop(), [str(p) for p in files]


def _hub_reachable() -> bool:
    if any(
        os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    ):
        return False
    host = (
        urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
        or "huggingface.co"
    )
    try:
        socket.create_connection((host, 443), timeout=HUB_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def _load_dataset(spec: str) -> Any:
    import datasets

    datasets.disable_progress_bars()
    path = Path(spec)
    try:
        if path.is_dir():
            builder, files = _data_files(path)
            extra = {"sample_by": "document"} if builder == "text" else {}
            return datasets.load_dataset(builder, data_files=files, split="train", **extra)
        if path.is_file():
            return datasets.load_dataset(
                FILE_BUILDERS[path.suffix], data_files=str(path), split="train"
            )
        if not _hub_reachable():
            raise ThermoclineError(
                f"corpus {spec!r} is not a local file or folder, and the Hugging Face Hub is not "
                f"reachable (offline) to load it as a dataset name; give a local path or "
                f"one of: {', '.join(KNOWN_CORPORA)}"
            )
        name, _, config = spec.partition(":")
        return datasets.load_dataset(name, config or None, split="train")
    except ThermoclineError:
        raise
    except Exception as error:  # datasets raises many types for unreadable or unknown data
        raise ThermoclineError(f"cannot read corpus {spec!r} with datasets: {error}") from None


def _text_column(dataset: Any, spec: str) -> str:
    if "text" in dataset.column_names:
        return "text"
    strings = [
        name
        for name, feature in dataset.features.items()
        if getattr(feature, "dtype", None) in ("string", "large_string")
    ]
    if len(strings) != 1:
        raise ThermoclineError(
            f"corpus {spec!r} has no 'text' column and not exactly one string column "
            f"(columns: {', '.join(dataset.column_names)})"
        )
    return strings[0]


def split_rows(n_docs: int, split: str) -> range:
    """Document-wise split: the first 80% of the documents are calibration."""
    if split not in SPLITS:
        raise ThermoclineError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    cut = int(n_docs * CALIBRATION_SHARE)
    return {"calibration": range(cut), "eval": range(cut, n_docs), "all": range(n_docs)}[split]


def _text_tokens(text: str, tokenizer: TextTokenizer, max_tokens: int) -> list[int]:
    """Tokenized in pieces cut after a newline, until max_tokens: a large text is never
    tokenized whole (a piece boundary may merge whitespace differently than one encode)."""
    ids: list[int] = []
    pos = 0
    while pos < len(text) and len(ids) < max_tokens:
        end = text.find("\n", pos + max(MIN_PIECE_CHARS, 8 * (max_tokens - len(ids))))
        end = len(text) if end < 0 else end + 1
        ids.extend(tokenizer.encode(text[pos:end], add_special_tokens=pos == 0))
        pos = end
    return ids[:max_tokens]


def corpus_tokens(spec: str, split: str, tokenizer: TextTokenizer, max_tokens: int) -> Tensor:
    """The first `max_tokens` token ids (int64, 1-D) of the corpus split."""
    spec = str(spec)
    if _is_plain_text(spec):
        return torch.tensor(
            _text_tokens(read_text(spec, split), tokenizer, max_tokens), dtype=torch.long
        )
    dataset = _load_dataset(spec)
    column, rows = _text_column(dataset, spec), split_rows(len(dataset), split)
    ids: list[int] = []
    for start in range(rows.start, rows.stop, DOCS_PER_BATCH):
        docs = dataset[start : min(start + DOCS_PER_BATCH, rows.stop)][column]
        for encoding in tokenizer.tokenizer.encode_batch([d for d in docs if d]):
            ids.extend(encoding.ids)
        if len(ids) >= max_tokens:
            break
    return torch.tensor(ids[:max_tokens], dtype=torch.long)


def corpus_key(spec: str) -> dict[str, Any]:
    """What identifies the corpus for the no-op rerun check: files with sizes and mtimes."""
    spec = str(spec)
    path = Path(spec) if spec not in KNOWN_CORPORA else KNOWN_CORPORA[spec]()
    if not path.exists():
        return {"name": spec}
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return {
        "name": spec,
        "files": [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files],
    }
