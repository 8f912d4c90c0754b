"""train_predictors: profile/ -> predictors/, one adaptive-rank predictor per layer."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from thermocline.predictor_trainer.config import TrainConfig
from thermocline.predictor_trainer.fit import LayerData
from thermocline.predictor_trainer.io import FORMAT, VERSION, save_predictors
from thermocline.predictor_trainer.model import NONLINEARITY, LayerPredictor, Predictors
from thermocline.predictor_trainer.rank_search import allowed_ranks, layer_ffn_bytes, search_rank
from thermocline.profiler import load_layer_data, load_profile

COLUMNS = (
    TextColumn("{task.description}"),
    BarColumn(),
    TimeElapsedColumn(),
    TextColumn("{task.fields[status]}"),
)


def train_predictors(
    profile_dir: Path, out: Path, config: TrainConfig | None = None, progress: bool = True
) -> Path:
    """Train, size and threshold every layer's predictor; write predictors/ atomically."""
    config = config or TrainConfig()
    profile = load_profile(profile_dir)
    model = profile.config
    ranks = allowed_ranks(config, model)
    device = config.torch_device()
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    layers: list[LayerPredictor] = []
    start = time.perf_counter()
    try:
        # Progress and per-layer lines are diagnostics: stderr, so stdout stays the result.
        with Progress(*COLUMNS, disable=not progress, console=Console(stderr=True)) as bar:
            task = bar.add_task("predictors", total=model.n_layers, status="")
            for i in range(model.n_layers):
                bar.update(task, description=f"layer {i}/{model.n_layers}")
                inputs, mask = load_layer_data(profile_dir, i, config.max_tokens)
                data = LayerData.split(inputs, mask, config.holdout, device)
                report = lambda text: bar.update(task, status=text)  # noqa: E731
                predictor, tried = search_rank(data, ranks, config, report)
                predictor.metrics |= {"ranks_tried": tried, "tokens": len(inputs)}
                bar.console.print(layer_line(i, predictor), highlight=False)
                layers.append(predictor)
                bar.advance(task)
    finally:
        torch.set_num_threads(threads)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "model": {k: profile.meta["model"][k] for k in ("name", "digest")},
        "profile": str(Path(profile_dir).resolve()),
        "nonlinearity": NONLINEARITY,
        "recall_target": config.recall,
        "train_seconds": time.perf_counter() - start,
        "device": device,
        "bytes": sum(p.bytes for p in layers),
        "ffn_bytes": model.n_layers * layer_ffn_bytes(model),
        "config": dataclasses.asdict(config),
        "layers": [
            {"rank": p.rank, "threshold": p.threshold, **p.metrics, "bytes": p.bytes}
            for p in layers
        ],
    }
    return save_predictors(Predictors(layers, meta), out)


def layer_line(i: int, p: LayerPredictor) -> str:
    m = p.metrics
    return (
        f"layer {i:2d}: rank {p.rank:4d}  recall {m['recall']:.3f}  precision {m['precision']:.3f}  "
        f"predicted sparsity {m['predicted_sparsity']:.3f} (true {m['true_sparsity']:.3f})  "
        f"sparsity by rank { ({r: round(s, 3) for r, s in m['ranks_tried'].items()}) }"
    )
