"""The placement for people: a text summary and a PNG of the per-layer split."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402 (after the backend is chosen)
from matplotlib.ticker import MaxNLocator  # noqa: E402

from thermocline.placement_solver.placement import Placement  # noqa: E402
from thermocline.placement_solver.units import format_size  # noqa: E402


def plot_placement(placement: Placement, path: str | Path) -> None:
    """Write a PNG: hot neurons / d_ff and expected GPU share of active neurons, per layer."""
    layers = range(placement.n_layers)
    hot_fraction = [count / placement.d_ff for count in placement.hot_counts]
    figure, axis = plt.subplots(figsize=(max(6.0, 0.12 * placement.n_layers + 3), 3.6))
    axis.bar(layers, hot_fraction, color="#d9622b", label="hot neurons (fraction of d_ff)")
    axis.plot(
        layers, placement.gpu_share, color="#1f5fa8", marker=".", label="GPU share of activations"
    )
    axis.set_xlabel("layer")
    axis.set_ylim(0, 1.05)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    # Below the axes: any spot inside may hide a layer's bar.
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False, fontsize=8)
    solver = placement.solver
    axis.set_title(
        f"{placement.model_name or 'model'} on {placement.hardware.name}, "
        f"budget {format_size(placement.vram_budget_bytes)}, {placement.dtype}: "
        f"GPU serves {placement.total_gpu_share:.1%} ({solver.status})",
        fontsize=9,
    )
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _layer_ranges(layers: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    ranges: list[list[int]] = []
    for layer in layers:
        if ranges and layer == ranges[-1][1] + 1:
            ranges[-1][1] = layer
        else:
            ranges.append([layer, layer])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in ranges)


def summary_lines(placement: Placement) -> list[str]:
    """What was placed where and how good the solution is, a fact per line."""
    attention = [
        i for i in range(placement.n_layers) if f"layers.{i}.attention" in placement.gpu_residents
    ]
    dense: list[str] = []  # in priority order, the per-layer entries folded into one
    for name in placement.gpu_residents:
        if not name.startswith("layers."):
            dense.append(name)
        elif name == f"layers.{attention[0]}.attention":
            dense.append(f"attention + KV cache of layers {_layer_ranges(attention)}")
    hot, total = sum(placement.hot_counts), placement.n_layers * placement.d_ff
    solver = placement.solver
    lines = [
        f"model {placement.model_name or '?'} (digest {placement.model_digest[:12] or '?'}), "
        f"{placement.dtype}, context {placement.context}",
        f"hardware {placement.hardware.describe()}",
        f"VRAM budget {format_size(placement.vram_budget_bytes)}: "
        f"dense {format_size(placement.dense_gpu_bytes)} + neurons "
        f"{format_size(placement.neuron_gpu_bytes)}",
        "dense on GPU: " + (", ".join(dense) if dense else "nothing"),
        f"hot neurons: {hot} of {total} ({hot / total:.1%}), "
        f"{format_size(placement.neuron_bytes)} each",
        f"GPU share of expected activations: {placement.total_gpu_share:.1%} "
        f"(of {sum(placement.expected_active):.1f} active neurons per token)",
    ]
    if solver.name == "none":
        lines.append(f"solver: none needed ({solver.status})")
        return lines
    gap = f"{solver.gap:.4%}" if solver.gap is not None else "undefined"
    bound = f"{solver.bound:.4f}" if solver.bound is not None else "none"
    gain = solver.objective / solver.greedy_objective - 1 if solver.greedy_objective else 0.0
    lines += [
        f"solver {solver.name}: {solver.status} in {solver.seconds:.2f} s, objective "
        f"{solver.objective:.4f} GPU activations per token, bound {bound}, gap {gap}",
        f"greedy objective {solver.greedy_objective:.4f} (ILP {gain:+.3%})",
        f"batch size {solver.batch_size}; C_l from {min(solver.min_hot)} to "
        f"{max(solver.min_hot)} neurons",
    ]
    return lines
