"""Synthetic converter inputs (placement.json, predictors/, profile/) and header surgery."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tiny_models import tiny_llama

from thermocline.converter import convert
from thermocline.converter.format import DIGEST_KEY, encode_header, header_digest
from thermocline.models import Checkpoint, load_checkpoint
from thermocline.placement_solver.hardware import HardwareProfile
from thermocline.placement_solver.placement import Placement, SolverReport, save_placement
from thermocline.placement_solver.residents import Resident


def hot_ids(checkpoint: Checkpoint, seed: int = 0) -> list[np.ndarray]:
    """Per layer a different random hot set (some layers all-cold or all-hot edge cases aside)."""
    cfg, rng = checkpoint.config, np.random.default_rng(seed)
    return [
        rng.permutation(cfg.d_ff)[: (i + 1) * cfg.d_ff // (cfg.n_layers + 2)]
        for i in range(cfg.n_layers)
    ]


def write_placement(
    path: Path,
    checkpoint: Checkpoint,
    hot: list[np.ndarray],
    digest: str | None = None,
    dtype: str = "fp32",
    residents: list[Resident] | None = None,
) -> Path:
    cfg = checkpoint.config
    placement = Placement(
        model_name="tiny",
        model_digest=digest or checkpoint.digest,
        d_ff=cfg.d_ff,
        dtype=dtype,
        context=128,
        vram_budget_bytes=1 << 20,
        neuron_bytes=6 * cfg.d_model,
        hardware=HardwareProfile(
            name="test-gpu",
            cpu_bandwidth_gbps=50.0,
            gpu_name="test",
            gpu_memory_bytes=1 << 30,
            gpu_bandwidth_gbps=1000.0,
            pcie_h2d_gbps=25.0,
            pcie_d2h_gbps=25.0,
        ),
        residents=residents or [Resident("norms", 1024, on_gpu=True), Resident("lm_head", 4096)],
        hot_neurons=[np.asarray(ids, dtype=np.int64) for ids in hot],
        expected_active=[10.0] * cfg.n_layers,
        gpu_share=[0.5] * cfg.n_layers,
        solver=SolverReport("highs-ilp", "optimal", 1.0, 1.0, 0.0, 0.1, 0.9, 8, [], 30.0, 0.0),
    )
    save_placement(placement, path)
    return path


def write_predictors(
    directory: Path, checkpoint: Checkpoint, ranks: list[int], digest: str | None = None
) -> Path:
    """The trainer's layout: fp16 w1 [rank, d_model], w2 [d_ff, rank] and predictors.json."""
    cfg, gen = checkpoint.config, torch.Generator().manual_seed(3)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {}
    for i, rank in enumerate(ranks):
        weights[f"layers.{i}.w1"] = torch.randn(rank, cfg.d_model, generator=gen).half()
        weights[f"layers.{i}.w2"] = torch.randn(cfg.d_ff, rank, generator=gen).half()
    save_file(weights, str(directory / "predictors.safetensors"))
    meta = {
        "format": "thermocline-predictors",
        "version": 1,
        "model": {"name": "tiny", "digest": digest or checkpoint.digest},
        "profile": "profile",
        "nonlinearity": "relu",
        "recall_target": 0.99,
        "train_seconds": 1.0,
        "bytes": 0,
        "ffn_bytes": 0,
        "layers": [
            {
                "rank": r,
                "threshold": -0.5 + i,
                "recall": 0.99,
                "precision": 0.5,
                "predicted_sparsity": 0.8,
                "true_sparsity": 0.9,
                "bytes": 0,
            }
            for i, r in enumerate(ranks)
        ],
    }
    (directory / "predictors.json").write_text(json.dumps(meta))
    return directory


def write_profile(
    directory: Path, checkpoint: Checkpoint, thresholds: list[float], digest: str | None = None
) -> Path:
    """The profiler's layout: activations.safetensors (counts, thresholds) and profile.json."""
    cfg = checkpoint.config
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for i, t in enumerate(thresholds):
        tensors[f"layers.{i}.counts"] = torch.arange(cfg.d_ff, dtype=torch.int64)
        tensors[f"layers.{i}.threshold"] = torch.tensor(t, dtype=torch.float32)
    save_file(tensors, str(directory / "activations.safetensors"))
    layer = {"sparsity": 0.9, "top10_share": 0.5, "top20_share": 0.7, "gini": 0.6}
    meta = {
        "format": "thermocline-profile",
        "version": 1,
        "model": {"name": "tiny", "digest": digest or checkpoint.digest, "config": cfg.to_dict()},
        "corpus": "synthetic",
        "split": "calibration",
        "seq_len": 64,
        "tokens": 1000,
        "target_sparsity": 0.9,
        "train_tokens": 1000,
        "shards": [],
        "layers": [{**layer, "threshold": t} for t in thresholds],
        "seconds": 1.0,
    }
    (directory / "profile.json").write_text(json.dumps(meta))
    return directory


def split_file(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def rewrite_header(path: Path, edit, out: Path) -> Path:
    """A copy of the artifact with edit(header) applied and a valid digest: corrupt on purpose."""
    header, data = split_file(path)
    edit(header)
    header["__metadata__"][DIGEST_KEY] = header_digest(header)
    out.write_bytes(encode_header(header) + data)
    return out


def tiny_artifact(tmp_path: Path, residents: list[str]) -> Path:
    """A tiny LLaMA (tied embeddings) as an fp16 .thermo with random predictors, whose placement
    put `residents` on the GPU and the first third of each layer's neurons in its hot block."""
    path, _ = tiny_llama(tmp_path / "m", tie_word_embeddings=True)
    checkpoint = load_checkpoint(path)
    cfg = checkpoint.config
    hot = [np.arange(cfg.d_ff // 3)] * cfg.n_layers
    placement = write_placement(
        tmp_path / "placement.json",
        checkpoint,
        hot,
        dtype="fp16",
        residents=[Resident(name, 1024, on_gpu=True) for name in residents],
    )
    predictors = write_predictors(tmp_path / "predictors", checkpoint, [4] * cfg.n_layers)
    out = tmp_path / "m.thermo"
    convert(str(path), out, placement, predictors, dtype="fp16")
    return out
