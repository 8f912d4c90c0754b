"""The ILP against exhaustive search and the greedy baseline, on tiny instances."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from placement_helpers import gpu_hardware

from thermocline.placement_solver.greedy import solve_greedy
from thermocline.placement_solver.ilp import solve_ilp
from thermocline.placement_solver.problem import build_problem, exact_optimum, min_hot_neurons


def exhaustive_best(problem) -> float:
    """Best objective over every subset of batches (not only leading ones)."""
    per_layer = []
    for layer in problem.layers:
        options = []
        for mask in itertools.product((0, 1), repeat=layer.n_batches):
            chosen = np.array(mask, dtype=bool)
            options.append((int(layer.sizes[chosen].sum()), float(layer.impacts[chosen].sum())))
        per_layer.append(options)
    best = 0.0
    for combo in itertools.product(*per_layer):
        if sum(n for n, _ in combo) > problem.capacity:
            continue
        if any(0 < n < c for (n, _), c in zip(combo, problem.min_hot, strict=True)):
            continue
        best = max(best, sum(value for _, value in combo))
    return best


def random_problem(seed: int, n_layers: int = 3, batches: int = 4, batch_size: int = 4):
    rng = np.random.default_rng(seed)
    d_ff = batches * batch_size
    impacts = [rng.random(d_ff) ** 3 for _ in range(n_layers)]
    capacity = int(rng.integers(0, n_layers * d_ff + 1))
    min_hot = [int(rng.integers(0, d_ff + 1)) for _ in range(n_layers)]
    return build_problem(impacts, batch_size, capacity, min_hot)


@pytest.mark.parametrize("seed", range(12))
def test_ilp_matches_exhaustive_search(seed):
    problem = random_problem(seed)
    result = solve_ilp(problem, solve_greedy(problem), gap_rel=0.0)
    assert not problem.violations(result.counts)
    assert result.objective == pytest.approx(exhaustive_best(problem), abs=1e-9)
    assert result.status == "optimal"
    assert result.bound == pytest.approx(result.objective, abs=1e-6)


def test_ragged_last_batch_matches_enumeration_of_leading_batches():
    # d_ff = 10 with b = 4: batches of 4, 4, 2; hot sets are leading batches by design.
    rng = np.random.default_rng(7)
    impacts = [rng.random(10) for _ in range(3)]
    problem = build_problem(impacts, 4, capacity=17, min_hot=[5, 0, 9])
    best = max(
        problem.objective(list(counts))
        for counts in itertools.product(range(4), repeat=3)
        if not problem.violations(list(counts))
    )
    assert solve_ilp(problem, [0, 0, 0], gap_rel=0.0).objective == pytest.approx(best)


def test_ilp_beats_greedy_when_the_communication_constraint_binds():
    # Layer 0's first batch is the densest item, so greedy takes it; layer 1 then cannot reach
    # its C_l of 12 neurons in the 8 left, though its 12 would be worth far more.
    impacts = [np.array([1.0] * 4 + [0.1] * 8), np.array([0.9] * 12)]
    problem = build_problem(impacts, 4, capacity=12, min_hot=[4, 12])
    greedy = solve_greedy(problem)
    result = solve_ilp(problem, greedy, gap_rel=0.0)
    assert greedy == [3, 0]
    assert result.counts == [0, 3]
    assert result.objective == pytest.approx(10.8)
    assert problem.objective(greedy) == pytest.approx(4.8)


def test_nothing_fits_gives_an_empty_placement():
    problem = build_problem([np.ones(8), np.ones(8)], 4, capacity=3, min_hot=[1, 1])
    result = solve_ilp(problem, solve_greedy(problem))
    assert result.counts == [0, 0]
    assert (result.objective, result.gap, result.status) == (0.0, 0.0, "optimal")


@settings(max_examples=30, deadline=None)
@given(
    n_layers=st.integers(1, 4),
    d_ff=st.integers(1, 24),
    batch_size=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
    capacity_share=st.floats(0, 1),
)
def test_ilp_is_feasible_and_never_worse_than_greedy(
    n_layers, d_ff, batch_size, seed, capacity_share
):
    rng = np.random.default_rng(seed)
    impacts = [rng.random(d_ff) ** rng.uniform(0.5, 4) for _ in range(n_layers)]
    min_hot = [int(rng.integers(0, d_ff + 1)) for _ in range(n_layers)]
    problem = build_problem(impacts, batch_size, int(capacity_share * n_layers * d_ff), min_hot)
    greedy = solve_greedy(problem)
    result = solve_ilp(problem, greedy, gap_rel=0.0)
    assert not problem.violations(greedy)
    assert not problem.violations(result.counts)
    assert result.objective >= problem.objective(greedy) - 1e-9
    assert result.bound >= result.objective - 1e-9


def test_min_batches_covers_c_l():
    problem = build_problem([np.ones(10)], 4, capacity=10, min_hot=[5])
    assert problem.min_batches(0) == 2
    problem.min_hot[0] = 0
    assert problem.min_batches(0) == 1
    problem.min_hot[0] = 10
    assert problem.min_batches(0) == 3


def test_min_hot_neurons_pays_for_the_layer_overhead():
    hardware = gpu_hardware(sync_latency_us=1.0)
    neuron_bytes, d_model = 48_000, 8
    saving = neuron_bytes / 50e9 - neuron_bytes / 1000e9  # per active neuron, seconds
    overhead = 1e-6 + 2 * d_model * 2 / 25e9
    impacts = np.full(1000, 0.5)
    c_l = min_hot_neurons(impacts, neuron_bytes, hardware, d_model, 2)
    assert (c_l - 1) * 0.5 * saving < overhead <= c_l * 0.5 * saving
    # Colder layers need more neurons; a layer that never pays is capped at d_ff.
    assert min_hot_neurons(impacts / 4, neuron_bytes, hardware, d_model, 2) > c_l
    assert min_hot_neurons(np.full(10, 1e-6), neuron_bytes, hardware, d_model, 2) == 10


def test_many_equal_batches_close_the_gap_quickly():
    # Saturated neurons (impact 1) make hundreds of identical batches; a capacity that is not a
    # multiple of b left a fractional LP bound that branch-and-bound could not close in time.
    layers = [np.concatenate([np.ones(1600), np.linspace(0.5, 0, 4800)]) for _ in range(20)]
    problem = build_problem(layers, 64, capacity=55 * 64 + 10, min_hot=[26] * 20)
    result = solve_ilp(problem, solve_greedy(problem), time_limit_s=5)
    assert result.status == "optimal"
    assert result.gap == 0.0 and result.objective == 55 * 64


@pytest.mark.parametrize("seed", range(4))
def test_ilp_matches_dynamic_programming_on_medium_instances(seed):
    # 8 layers x 30 batches is far past exhaustive search; C_l spans several batches.
    rng = np.random.default_rng(seed)
    impacts = [np.sort(rng.pareto(1.0, 240))[::-1] / 50 for _ in range(8)]
    min_hot = [int(rng.integers(0, 120)) for _ in range(8)]
    problem = build_problem(impacts, 8, int(rng.integers(100, 1200)), min_hot)
    result = solve_ilp(problem, solve_greedy(problem), gap_rel=0.0)
    assert result.objective == pytest.approx(exact_optimum(problem), rel=1e-9)


def test_large_c_l_blocks_with_a_tight_budget_close_the_gap():
    # C_l = 25 batches per layer and room for 5.5 such blocks: without the row bounding the
    # number of GPU layers the LP opened a fraction of a sixth layer and B&B stalled at ~7%.
    rng = np.random.default_rng(3)
    impacts = [np.minimum(np.sort(rng.pareto(1.0, 960))[::-1] / 40, 1) for _ in range(30)]
    problem = build_problem(impacts, 16, capacity=5 * 400 + 203, min_hot=[400] * 30)
    result = solve_ilp(problem, solve_greedy(problem), time_limit_s=10)
    assert result.status == "optimal"
    assert result.objective == pytest.approx(exact_optimum(problem), rel=1e-4)
