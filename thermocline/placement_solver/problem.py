"""The placement problem both solvers share: batches of sorted neurons, a capacity, C_l.

Each layer's neurons are sorted by impact (activation frequency), most active first, and cut
into batches of b; a solution is, per layer, how many leading batches go to the GPU. Only
leading batches are ever chosen: with equal-size batches a later batch never has more impact
than an earlier one, so any set of k batches can be swapped for the first k without losing
objective or memory. (When b does not divide d_ff the last batch is smaller and the hot set
is still restricted to top-k by design: the runtime wants each layer's hottest neurons.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from thermocline.placement_solver.hardware import HardwareProfile


@dataclass
class LayerBatches:
    order: np.ndarray  # neuron ids, descending impact (ties: lower id first)
    sizes: np.ndarray  # int64, neurons per batch
    impacts: np.ndarray  # float64, total impact per batch

    @classmethod
    def build(cls, impacts: np.ndarray, batch_size: int) -> LayerBatches:
        order = np.argsort(-impacts, kind="stable")
        starts = np.arange(0, len(order), batch_size)
        sizes = np.diff(np.append(starts, len(order)))
        batch_impacts = np.add.reduceat(impacts[order], starts) if len(order) else np.zeros(0)
        return cls(order, sizes.astype(np.int64), batch_impacts.astype(np.float64))

    @property
    def n_batches(self) -> int:
        return len(self.sizes)


@dataclass
class PlacementProblem:
    layers: list[LayerBatches]
    capacity: int  # neurons the VRAM left after the dense residents holds
    min_hot: list[int]  # C_l: a layer with any neuron on the GPU has at least this many there
    batch_size: int

    def min_batches(self, layer: int) -> int:
        """Leading batches a GPU-using layer must take to reach C_l neurons."""
        cumulative = np.cumsum(self.layers[layer].sizes)
        return (
            int(np.searchsorted(cumulative, self.min_hot[layer])) + 1 if self.min_hot[layer] else 1
        )

    def hot_count(self, layer: int, batches: int) -> int:
        return int(self.layers[layer].sizes[:batches].sum())

    def objective(self, counts: list[int]) -> float:
        """Total impact on the GPU: expected active neurons the GPU serves per token."""
        return float(
            sum(layer.impacts[:k].sum() for layer, k in zip(self.layers, counts, strict=True))
        )

    def violations(self, counts: list[int]) -> list[str]:
        """What `counts` breaks (empty when feasible); the tests' and solvers' common check."""
        problems = []
        used = sum(self.hot_count(i, k) for i, k in enumerate(counts))
        if used > self.capacity:
            problems.append(f"{used} hot neurons exceed the capacity {self.capacity}")
        for i, k in enumerate(counts):
            if not 0 <= k <= self.layers[i].n_batches:
                problems.append(f"layer {i}: {k} batches out of range")
            elif k and self.hot_count(i, k) < self.min_hot[i]:
                problems.append(f"layer {i}: {self.hot_count(i, k)} hot < C_l {self.min_hot[i]}")
        return problems

    def hot_neurons(self, counts: list[int]) -> list[np.ndarray]:
        """Per layer, the original ids of the GPU neurons, most active first."""
        return [
            layer.order[: self.hot_count(i, k)]
            for i, (layer, k) in enumerate(zip(self.layers, counts, strict=True))
        ]


def build_problem(
    impacts: list[np.ndarray], batch_size: int, capacity: int, min_hot: list[int]
) -> PlacementProblem:
    layers = [LayerBatches.build(layer, batch_size) for layer in impacts]
    return PlacementProblem(layers, capacity, min_hot, batch_size)


def layer_overhead_s(hardware: HardwareProfile, d_model: int, activation_bytes: int) -> float:
    """What using the GPU costs a layer per token: a sync, a launch and the hidden state both ways."""
    hidden = d_model * activation_bytes
    transfer = hidden / (hardware.pcie_h2d_gbps * 1e9) + hidden / (hardware.pcie_d2h_gbps * 1e9)
    return (hardware.sync_latency_us + hardware.launch_latency_us) * 1e-6 + transfer


def min_hot_neurons(
    impacts: np.ndarray,
    neuron_bytes: int,
    hardware: HardwareProfile,
    d_model: int,
    activation_bytes: int,
) -> int:
    """C_l: the fewest hottest neurons whose expected GPU time saving pays the layer's overhead.

    A neuron costs neuron_bytes / bandwidth to compute on either side (batch-1 decode reads
    every weight once, so it is bandwidth-bound), but only on tokens where it fires: moving
    the k hottest neurons (impacts f_1 >= f_2 >= ...) to the GPU saves per token
        saving(k) = (neuron_bytes / cpu_bw - neuron_bytes / gpu_bw) * (f_1 + ... + f_k)
    and costs layer_overhead_s (sync + launch + hidden-state transfers). C_l is the least k
    with saving(k) >= overhead, capped at d_ff when even the whole layer does not pay.
    """
    d_ff = len(impacts)
    per_active_s = neuron_bytes / (hardware.cpu_bandwidth_gbps * 1e9)
    per_active_s -= neuron_bytes / (hardware.gpu_bandwidth_gbps * 1e9)
    if per_active_s <= 0 or d_ff == 0:
        return d_ff
    needed = layer_overhead_s(hardware, d_model, activation_bytes) / per_active_s
    cumulative = np.cumsum(np.sort(impacts)[::-1])
    # A tiny slack keeps float rounding from pushing an exact tie one neuron further.
    k = int(np.searchsorted(cumulative, needed * (1 - 1e-12))) + 1
    return min(k, d_ff) if math.isfinite(needed) else d_ff


def exact_optimum(problem: PlacementProblem) -> float:
    """Dynamic program over leading-batch counts: exact when all batches have size b.

    The independent check of the ILP (tests, benchmark)'s incumbent where HiGHS cannot close its LP bound.
    """
    slots = problem.capacity // problem.batch_size
    best = np.zeros(slots + 1)  # best[c]: top objective with at most c batches, layers so far
    for i, layer in enumerate(problem.layers):
        prefix = np.concatenate([[0.0], np.cumsum(layer.impacts)])
        extended = best.copy()
        for k in range(problem.min_batches(i), min(layer.n_batches, slots) + 1):
            np.maximum(extended[k:], best[: slots + 1 - k] + prefix[k], out=extended[k:])
        best = extended
    return float(best.max())
