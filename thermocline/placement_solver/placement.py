"""placement.json: what the solver decided, written atomically and read back with checks.

Layout (format "thermocline-placement", version 1):
    model        name, digest (of the profiled checkpoint), n_layers, d_ff
    hardware     the HardwareProfile's fields;  vram_budget_bytes, dtype, context, neuron_bytes
    priority_order  the order dense residents get VRAM (residents.PRIORITY_ORDER)
    residents    [{name, bytes, on_gpu, required}] in that order
    solver       name, status, objective, bound, gap, seconds, greedy_objective, batch_size,
                 min_hot (C_l per layer), time_limit_s, gap_tolerance
    summary      derived totals for people and `inspect` (the loader recomputes them)
    layers       one line per layer: hot_count, expected_active (mean active neurons per
                 token), gpu_share (of those, the share the GPU serves), hot_neurons (original
                 ids, most active first)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thermocline.errors import ThermoclineError
from thermocline.placement_solver.hardware import HardwareProfile
from thermocline.placement_solver.residents import PRIORITY_ORDER, Resident

PLACEMENT_FORMAT = "thermocline-placement"
PLACEMENT_VERSION = 1


@dataclass
class SolverReport:
    name: str  # "highs-ilp", or "none" when no choice was left (all-on-gpu, cpu-only)
    status: str  # "optimal", "time-limit", "all-on-gpu" or "cpu-only"
    objective: float  # total impact on the GPU: expected active neurons it serves per token
    bound: float | None  # proven upper bound on the objective
    gap: float | None  # (bound - objective) / objective
    seconds: float
    greedy_objective: float  # the greedy baseline under the same constraints
    batch_size: int
    min_hot: list[int]  # C_l per layer, neurons; empty without a GPU
    time_limit_s: float
    gap_tolerance: float


@dataclass
class Placement:
    model_name: str
    model_digest: str
    d_ff: int
    dtype: str
    context: int
    vram_budget_bytes: int
    neuron_bytes: int
    hardware: HardwareProfile
    residents: list[Resident]  # dense tensors in priority order, each on the GPU or not
    hot_neurons: list[np.ndarray]  # per layer, int64 ids of GPU neurons, most active first
    expected_active: list[float]  # per layer, mean active neurons per token (profile)
    gpu_share: list[float]  # per layer, share of those active neurons the GPU holds
    solver: SolverReport
    priority_order: list[str] = field(default_factory=lambda: list(PRIORITY_ORDER))

    @property
    def n_layers(self) -> int:
        return len(self.hot_neurons)

    @property
    def gpu_residents(self) -> list[str]:
        return [r.name for r in self.residents if r.on_gpu]

    @property
    def hot_counts(self) -> list[int]:
        return [len(ids) for ids in self.hot_neurons]

    @property
    def dense_gpu_bytes(self) -> int:
        return sum(r.bytes for r in self.residents if r.on_gpu)

    @property
    def neuron_gpu_bytes(self) -> int:
        return sum(self.hot_counts) * self.neuron_bytes

    @property
    def total_gpu_share(self) -> float:
        """Share of all expected activations per token that the GPU serves."""
        total = sum(self.expected_active)
        served = sum(a * s for a, s in zip(self.expected_active, self.gpu_share, strict=True))
        return served / total if total else 0.0

    @property
    def summary(self) -> dict[str, Any]:
        """Compact facts for the converter's header metadata and `inspect`."""
        hot = sum(self.hot_counts)
        return {
            "hardware": self.hardware.name,
            "vram_budget_bytes": self.vram_budget_bytes,
            "dtype": self.dtype,
            "context": self.context,
            "solver": self.solver.name,
            "status": self.solver.status,
            "objective": self.solver.objective,
            "greedy_objective": self.solver.greedy_objective,
            "gap": self.solver.gap,
            "n_gpu_residents": len(self.gpu_residents),
            "dense_gpu_bytes": self.dense_gpu_bytes,
            "neuron_gpu_bytes": self.neuron_gpu_bytes,
            "hot_neurons": hot,
            "hot_fraction": hot / (self.n_layers * self.d_ff) if self.d_ff else 0.0,
            "gpu_share": self.total_gpu_share,
        }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def placement_to_dict(placement: Placement) -> dict[str, Any]:
    solver = dataclasses.asdict(placement.solver)
    solver["bound"], solver["gap"] = _finite(solver["bound"]), _finite(solver["gap"])
    return {
        "format": PLACEMENT_FORMAT,
        "version": PLACEMENT_VERSION,
        "model": {
            "name": placement.model_name,
            "digest": placement.model_digest,
            "n_layers": placement.n_layers,
            "d_ff": placement.d_ff,
        },
        "hardware": placement.hardware.to_dict(),
        "vram_budget_bytes": placement.vram_budget_bytes,
        "dtype": placement.dtype,
        "context": placement.context,
        "neuron_bytes": placement.neuron_bytes,
        "priority_order": placement.priority_order,
        "residents": [dataclasses.asdict(r) for r in placement.residents],
        "solver": solver,
        "summary": placement.summary,
        "layers": [
            {
                "hot_count": len(ids),
                "expected_active": a,
                "gpu_share": s,
                "hot_neurons": ids.tolist(),
            }
            for ids, a, s in zip(
                placement.hot_neurons, placement.expected_active, placement.gpu_share, strict=True
            )
        ],
    }


def save_placement(placement: Placement, path: str | Path) -> None:
    """Write placement.json atomically (a temporary file in the same folder, then rename)."""
    data = placement_to_dict(placement)
    layers = data.pop("layers")
    head = json.dumps(data, indent=2)
    # One line per layer keeps hundreds of thousands of ids from taking a line each.
    rows = ",\n".join("    " + json.dumps(layer, separators=(",", ":")) for layer in layers)
    text = head[:-2] + ',\n  "layers": [\n' + rows + "\n  ]\n}\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def load_placement(path: str | Path) -> Placement:
    """Read a placement.json, checking its format and that hot ids are valid for its model."""
    path = Path(path)
    redo = "re-run `thermocline place`"
    if not path.is_file():
        raise ThermoclineError(f"placement file {path} not found; {redo}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ThermoclineError(f"{path}: not valid JSON ({error}); {redo}") from None
    if not isinstance(data, dict) or data.get("format") != PLACEMENT_FORMAT:
        raise ThermoclineError(f"{path}: not a placement file (format is not {PLACEMENT_FORMAT!r})")
    if data.get("version") != PLACEMENT_VERSION:
        raise ThermoclineError(
            f"{path}: placement version {data.get('version')!r} is not supported "
            f"(expected {PLACEMENT_VERSION}); {redo}"
        )
    try:
        model, layers = data["model"], data["layers"]
        d_ff = int(model["d_ff"])
        if len(layers) != int(model["n_layers"]):
            raise ThermoclineError(
                f"{path}: {len(layers)} layers listed but the model has {model['n_layers']}; {redo}"
            )
        hot = []
        for i, layer in enumerate(layers):
            ids = np.asarray(layer["hot_neurons"])
            if ids.ndim != 1 or len(ids) != int(layer["hot_count"]):
                raise ThermoclineError(
                    f"{path}: layer {i} hot_count does not match its ids; {redo}"
                )
            if len(ids) and ids.dtype.kind not in "iu":
                raise ThermoclineError(f"{path}: layer {i} hot neuron ids are not integers; {redo}")
            if len(ids) and (ids.min() < 0 or ids.max() >= d_ff or len(np.unique(ids)) != len(ids)):
                raise ThermoclineError(
                    f"{path}: layer {i} has hot neuron ids outside 0..{d_ff - 1} or repeated; {redo}"
                )
            hot.append(ids.astype(np.int64))
        return Placement(
            model_name=str(model["name"]),
            model_digest=str(model["digest"]),
            d_ff=d_ff,
            dtype=str(data["dtype"]),
            context=int(data["context"]),
            vram_budget_bytes=int(data["vram_budget_bytes"]),
            neuron_bytes=int(data["neuron_bytes"]),
            hardware=HardwareProfile.from_dict(data["hardware"]),
            residents=[Resident(**r) for r in data["residents"]],
            hot_neurons=hot,
            expected_active=[float(layer["expected_active"]) for layer in layers],
            gpu_share=[float(layer["gpu_share"]) for layer in layers],
            solver=SolverReport(**data["solver"]),
            priority_order=list(data["priority_order"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ThermoclineError(f"{path}: missing or malformed field ({error!r}); {redo}") from None
