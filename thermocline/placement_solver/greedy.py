"""Greedy placement: global top impact per byte under the ILP's constraints.

The baseline the ILP is compared against (both objectives go into placement.json) and its
MIP start. Items are taken by impact per neuron, highest first, while they fit: for a layer
not yet on the GPU the item is its C_l block (the m_l leading batches, so no layer is ever
left below C_l), for a layer already there its next batch. An item that does not fit ends
that layer's growth (later batches are never taken without earlier ones).
"""

from __future__ import annotations

import heapq

from thermocline.placement_solver.problem import PlacementProblem


def solve_greedy(problem: PlacementProblem) -> list[int]:
    """Per layer, the number of leading batches the greedy puts on the GPU."""
    counts = [0] * len(problem.layers)
    free = problem.capacity
    # (-impact per neuron, layer, leading batches held once the item is taken)
    items = []
    for i, layer in enumerate(problem.layers):
        block = min(problem.min_batches(i), layer.n_batches)
        if block:
            density = layer.impacts[:block].sum() / problem.hot_count(i, block)
            items.append((-float(density), i, block))
    heapq.heapify(items)
    while items:
        _, i, end = heapq.heappop(items)
        need = problem.hot_count(i, end) - problem.hot_count(i, counts[i])
        if need > free:
            continue
        free -= need
        counts[i] = end
        layer = problem.layers[i]
        if end < layer.n_batches:
            heapq.heappush(items, (-float(layer.impacts[end] / layer.sizes[end]), i, end + 1))
    return counts
