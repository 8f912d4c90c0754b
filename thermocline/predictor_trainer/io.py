"""predictors/ on disk: predictors.safetensors (fp16 w1, w2 per layer) and predictors.json."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from thermocline.errors import ThermoclineError
from thermocline.predictor_trainer.model import LayerPredictor, Predictors

FORMAT, VERSION = "thermocline-predictors", 1
WEIGHTS, META = "predictors.safetensors", "predictors.json"


def save_predictors(predictors: Predictors, out: Path) -> Path:
    """Write both files into a temporary folder beside `out`, then swap it into place."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ThermoclineError(f"{out} exists and is not a folder: choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tensors = {}
        for i, p in enumerate(predictors.layers):
            tensors[f"layers.{i}.w1"] = p.w1.detach().half().contiguous()
            tensors[f"layers.{i}.w2"] = p.w2.detach().half().contiguous()
        save_file(tensors, str(tmp / WEIGHTS))
        (tmp / META).write_text(json.dumps(predictors.meta, indent=1) + "\n")
        if out.exists():  # os.replace cannot replace a non-empty folder: move the old one aside
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_predictors(path: Path) -> Predictors:
    """Read and check a predictors/ folder; weights come back as float32 tensors."""
    path = Path(path)
    weights, meta_path = path / WEIGHTS, path / META
    if not (weights.is_file() and meta_path.is_file()):
        raise ThermoclineError(
            f"{path} is not a predictors folder ({WEIGHTS} and {META} expected): "
            "run `thermocline train-predictors` first"
        )
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(weights))
        layers_meta = meta["layers"]
    except (json.JSONDecodeError, SafetensorError, KeyError, TypeError) as error:
        raise ThermoclineError(
            f"{path} is corrupt ({error}): train the predictors again"
        ) from error
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ThermoclineError(
            f"{meta_path}: expected format {FORMAT} version {VERSION}, "
            f"got {meta.get('format')!r} version {meta.get('version')!r}"
        )
    layers = []
    for i, entry in enumerate(layers_meta):
        w1, w2 = tensors.get(f"layers.{i}.w1"), tensors.get(f"layers.{i}.w2")
        if w1 is None or w2 is None or w1.shape[0] != entry["rank"] or w2.shape[1] != entry["rank"]:
            raise ThermoclineError(
                f"{weights}: layer {i} weights are missing or do not match rank {entry['rank']}: "
                "train the predictors again"
            )
        metrics = {k: v for k, v in entry.items() if k not in ("rank", "threshold", "bytes")}
        layers.append(
            LayerPredictor(w1.to(torch.float32), w2.to(torch.float32), entry["threshold"], metrics)
        )
    return Predictors(layers, meta)
