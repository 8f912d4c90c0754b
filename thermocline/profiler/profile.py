"""`profile_model`: corpus -> activation counts, thresholds, skew, predictor training shards.

The whole profile is built in a hidden temp folder beside `out` and moved into place at the
end (os.replace), so an interrupted run leaves no half artifact; leftovers of a killed run
are removed by the next. A rerun with the same inputs (model digest, corpus files, options
that change the result) finds them in profile.json and does nothing unless `force`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from torch import Tensor

from thermocline.corpus import SPLITS
from thermocline.errors import ThermoclineError
from thermocline.models.checkpoint import build_model, load_checkpoint
from thermocline.models.transformer import Transformer
from thermocline.profiler.artifact import (
    ACTIVATIONS,
    FORMAT,
    META,
    PLOT,
    VERSION,
    write_activations,
)
from thermocline.profiler.calibrate import calibrate_thresholds
from thermocline.profiler.collect import collect, spread, train_rows
from thermocline.profiler.datasets_corpus import corpus_key, corpus_tokens
from thermocline.profiler.plot import plot_profile
from thermocline.profiler.shards import TRAIN_DIR, ShardWriter
from thermocline.profiler.stats import layer_stats
from thermocline.runtime.engine import parse_dtype

DEFAULT_TARGET_SPARSITY = 0.5
NOT_INPUTS = ("batch", "device", "force", "progress", "target_sparsity")  # don't change results


@dataclass
class ProfileConfig:
    tokens: int = 1_000_000  # tokens to profile at most (fewer when the split is shorter)
    seq_len: int = 512  # tokens per non-overlapping window
    batch: int = 8  # windows per forward pass
    target_sparsity: float | None = None  # silu/gelu: share of h made inactive; None: 0.5
    split: str = "calibration"
    train_tokens: int = 100_000  # tokens of predictor training data (FFN inputs + masks)
    shard_tokens: int = 4096  # training rows per shard file
    calib_tokens: int = 16_384  # tokens the thresholds are calibrated on, spread over the corpus
    dtype: str = "fp32"
    device: str = "auto"  # cuda when available, else cpu
    force: bool = False  # redo even when the profile is up to date
    progress: bool = True  # progress bars and messages on stderr

    def validate(self) -> None:
        for name in ("tokens", "seq_len", "batch", "shard_tokens", "calib_tokens"):
            if getattr(self, name) < 1:
                raise ThermoclineError(f"{name.replace('_', '-')} must be at least 1")
        if self.train_tokens < 0:
            raise ThermoclineError("train-tokens must be 0 or more")
        if self.target_sparsity is not None and not 0 <= self.target_sparsity < 1:
            raise ThermoclineError(f"target sparsity must be in [0, 1), got {self.target_sparsity}")
        if self.split not in SPLITS:
            raise ThermoclineError(
                f"unknown split {self.split!r}; choose one of {', '.join(SPLITS)}"
            )
        parse_dtype(self.dtype)


class _SpeedColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:,.0f} tokens/s" if task.speed else "", style="cyan")


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _SpeedColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        disable=not enabled,
        console=Console(stderr=True),
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_leftovers(out: Path) -> None:
    """Temp folders of runs of the same `out` that were killed (their process is gone)."""
    for path in out.parent.glob(f".{out.name}.*-*"):
        pid = path.name.rsplit("-", 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _publish(tmp: Path, out: Path) -> None:
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)  # a folder cannot replace a non-empty folder in one step
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _existing_inputs(out: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((out / META).read_text())
    except (OSError, ValueError):
        return None
    is_profile = isinstance(meta, dict) and meta.get("format") == FORMAT
    return meta.get("inputs", {}) if is_profile else None


def _inputs_key(
    digest: str, corpus: str, config: ProfileConfig, target: float | None
) -> dict[str, Any]:
    """Everything that changes the profile (not batch, device or progress)."""
    options = {k: v for k, v in asdict(config).items() if k not in NOT_INPUTS}
    return {
        "format_version": VERSION,
        "model_digest": digest,
        "corpus": corpus_key(corpus),
        **options,
        "target_sparsity": target,
    }


def _profile_into(
    tmp: Path,
    model: Transformer,
    windows: Tensor,
    target: float | None,
    config: ProfileConfig,
    title: str,
) -> dict[str, Any]:
    """Calibrate, count, write shards, counts and plot into `tmp`; profile.json's measured part."""
    n_layers, seq_len = model.cfg.n_layers, windows.shape[1]
    times = [time.perf_counter()]
    with _progress(config.progress) as bar:
        thresholds = None
        calib = windows[spread(len(windows), math.ceil(config.calib_tokens / seq_len))]
        if target is not None:
            task = bar.add_task("calibrating thresholds", total=calib.numel() * n_layers)
            advance = partial(bar.advance, task)
            thresholds = calibrate_thresholds(model, calib, target, config.batch, advance=advance)
        times.append(time.perf_counter())
        task = bar.add_task("profiling", total=windows.numel())
        take = train_rows(len(windows), seq_len, min(config.train_tokens, windows.numel()))
        with ShardWriter(tmp / TRAIN_DIR, n_layers, config.shard_tokens) as writer:
            collected = collect(
                model, windows, config.batch, take, writer, partial(bar.advance, task)
            )
            shards = writer.close()
        times.append(time.perf_counter())
    tokens, counts = collected.tokens, collected.counts
    layers = [
        layer_stats(c, tokens, thresholds[i] if thresholds else 0.0) for i, c in enumerate(counts)
    ]
    write_activations(tmp / ACTIVATIONS, counts, thresholds)
    mean_sparsity = sum(layer["sparsity"] for layer in layers) / n_layers
    plot_profile(counts, tokens, f"{title}, mean sparsity {mean_sparsity:.1%}", tmp / PLOT)
    times.append(time.perf_counter())
    return {
        "tokens": tokens,
        "calib_tokens": calib.numel() if target is not None else 0,
        "train_tokens": writer.tokens,
        "shards": shards,
        "layers": layers,
        "seconds": times[-1] - times[0],  # calibration + counting + writing (not loading)
        "timings": dict(
            zip(("calibrate", "collect", "write"), np.diff(times).tolist(), strict=True)
        ),
    }


def profile_model(
    model_spec: str, corpus: str, out: str | Path, config: ProfileConfig | None = None
) -> Path:
    """Profile `model_spec` on `corpus` into the profile folder `out`; returns `out`."""
    config = config or ProfileConfig()
    config.validate()
    out, console = Path(out), Console(stderr=True, quiet=not config.progress)
    started = time.perf_counter()
    checkpoint = load_checkpoint(model_spec)
    cfg = checkpoint.config
    target = None
    if not cfg.zero_sparse:
        target = config.target_sparsity
        target = DEFAULT_TARGET_SPARSITY if target is None else target
    inputs = _inputs_key(checkpoint.digest, corpus, config, target)
    if out.exists():
        existing = _existing_inputs(out)
        if existing == inputs and not config.force:
            message = f"{out} is up to date (same model, corpus and options); --force redoes it"
            console.print(message, soft_wrap=True)
            return out
        if existing is None and not config.force:
            raise ThermoclineError(
                f"{out} exists and is not a profile; choose another --out or pass --force"
            )
    if config.seq_len > cfg.max_seq_len:
        raise ThermoclineError(
            f"--seq-len {config.seq_len} exceeds the model's context of {cfg.max_seq_len}"
        )
    ids = corpus_tokens(corpus, config.split, checkpoint.tokenizer, config.tokens)
    n_windows = len(ids) // config.seq_len
    if n_windows == 0:
        raise ThermoclineError(
            f"{corpus} ({config.split}) has {len(ids)} tokens, fewer than one window of "
            f"{config.seq_len}; lower --seq-len or give a larger corpus"
        )
    windows = ids[: n_windows * config.seq_len].view(n_windows, config.seq_len)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if config.device == "auto" else config.device)
    model = build_model(checkpoint, parse_dtype(config.dtype)).to(device)
    load_s = time.perf_counter() - started

    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        title = f"{checkpoint.path.name}: {windows.numel():,} tokens of {corpus} ({config.split})"
        measured = _profile_into(tmp, model, windows, target, config, title)
        measured["timings"]["load"] = load_s
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "model": {
                "name": str(model_spec),
                "digest": checkpoint.digest,
                "config": cfg.to_dict(),
            },
            "corpus": str(corpus),
            "split": config.split,
            "seq_len": config.seq_len,
            "target_sparsity": target,
            **measured,
            "device": str(device),
            "inputs": inputs,
        }
        (tmp / META).write_text(json.dumps(meta, indent=1))
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
