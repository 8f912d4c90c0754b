"""The paper's placement ILP, modelled with pulp and solved by HiGHS.

Per layer l and batch j (batches of neurons sorted by impact, see problem.py):
    y[l,j] in {0,1}  batch j of layer l is on the GPU
    z[l]   in {0,1}  layer l uses the GPU at all
maximize    sum_{l,j} impact[l,j] * y[l,j]                 (expected GPU activations/token)
subject to  sum_{l,j} size[l,j] * y[l,j] <= capacity       memory (in neurons: all neurons of
                                                           a model have the same bytes)
            sum_j size[l,j] * y[l,j] >= C_l * z[l]         communication
            y[l,0] <= z[l]                                 the big-M link sum_j y <= n_l z,
                                                           made tight by the ordering below
            y[l,j] >= y[l,j+1]                             symmetry breaking: leading batches
            y[l,m_l - 1] >= z[l]                           m_l = batches that hold C_l neurons
            sum_l z[l] <= L_max                            L_max = most layers whose m_l-batch
                                                           blocks fit in the capacity together
The last two rows are implied for integer y; they tighten the LP relaxation. With the first,
each layer's LP polytope is integral (z = y[l,0] = ... = y[l,m_l-1] >= ... >= 0) and only the
memory row couples layers; the second keeps the LP from opening a fraction of one more layer
than fits, which otherwise left a gap of several percent that branch-and-bound could not close
within a minute when C_l spans many batches. The capacity is also rounded down to a multiple of
the batch sizes' gcd. The greedy solution is the MIP start: the ILP is never worse than greedy.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import highspy
import numpy as np
import pulp

from thermocline.placement_solver.problem import PlacementProblem

STATUSES = {
    highspy.HighsModelStatus.kOptimal: "optimal",
    highspy.HighsModelStatus.kTimeLimit: "time-limit",
}


@dataclass
class SolveResult:
    counts: list[int]  # per layer, leading batches on the GPU
    objective: float  # total impact on the GPU
    bound: float  # best upper bound on the objective HiGHS proved
    gap: (
        float | None
    )  # (bound - objective) / objective; None when undefined (objective 0, bound > 0)
    status: str  # "optimal" (within the gap tolerance), "time-limit", or HiGHS's own word
    seconds: float  # model building and solving


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence file descriptor 1: HiGHS prints its banner from C++ when it is created."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class _HighsWithStart(pulp.HiGHS):
    """pulp's HiGHS interface, plus a MIP start (its API class has no warmStart)."""

    def __init__(self, start: dict[str, float], **options: object) -> None:
        # HiGHS's MIP presolve probes the long implication chains of the ordering rows: ~50 s on
        # the 70B-sized model for a few percent fewer rows. The model is already tight.
        super().__init__(presolve="off", **options)
        self.start = start

    def createAndConfigureSolver(self, lp: pulp.LpProblem) -> None:  # noqa: N802 (pulp's name)
        with _quiet_stdout():
            super().createAndConfigureSolver(lp)

    def callSolver(self, lp: pulp.LpProblem) -> None:  # noqa: N802 (pulp's name)
        solution = highspy.HighsSolution()
        # buildSolverModel numbered the columns in lp.variables() order.
        solution.col_value = [self.start.get(var.name, 0.0) for var in lp.variables()]
        lp.solverModel.setSolution(solution)
        super().callSolver(lp)


def relative_gap(objective: float, bound: float) -> float | None:
    if objective > 0:
        return max(bound - objective, 0.0) / objective
    return 0.0 if bound <= 1e-12 else None


def solve_ilp(
    problem: PlacementProblem,
    start: list[int],
    time_limit_s: float = 60.0,
    gap_rel: float = 1e-4,
) -> SolveResult:
    """Solve `problem` to the relative gap `gap_rel` or `time_limit_s`, from the feasible `start`."""
    began = time.perf_counter()
    model = pulp.LpProblem("thermocline_placement", pulp.LpMaximize)
    objective, memory, start_values = [], [], {}
    layer_vars: dict[int, list[pulp.LpVariable]] = {}
    layer_z: dict[int, pulp.LpVariable] = {}
    # Every batch size is a multiple of their gcd, so is any sum of them: rounding the capacity
    # down to one loses no solution and removes a fractional remainder from the LP bound that,
    # with many equal batches (saturated neurons), B&B cannot close. HiGHS's presolve would.
    unit = int(np.gcd.reduce(np.concatenate([layer.sizes for layer in problem.layers])))
    capacity = problem.capacity // unit * unit if unit else problem.capacity
    for i, layer in enumerate(problem.layers):
        # Batches past the capacity can never be taken; layers that cannot reach C_l stay cold.
        usable = int((layer.sizes.cumsum() <= capacity).sum())
        needed = problem.min_batches(i)
        if usable < needed:
            continue
        ys = [model.add_variable(f"y_{i}_{j}", cat=pulp.LpBinary) for j in range(usable)]
        z = model.add_variable(f"z_{i}", cat=pulp.LpBinary)
        sizes = [int(s) for s in layer.sizes[:usable]]
        model += pulp.lpSum(s * y for s, y in zip(sizes, ys, strict=True)) >= problem.min_hot[i] * z
        model += ys[0] <= z
        model += ys[needed - 1] >= z
        for earlier, later in zip(ys, ys[1:], strict=False):
            model += earlier >= later
        objective += [(y, float(w)) for y, w in zip(ys, layer.impacts[:usable], strict=True)]
        memory += [(y, s) for y, s in zip(ys, sizes, strict=True)]
        layer_vars[i], layer_z[i] = ys, z
        start_values |= {y.name: float(j < start[i]) for j, y in enumerate(ys)}
        start_values[z.name] = float(start[i] > 0)
    if not layer_vars:
        return SolveResult(
            [0] * len(problem.layers), 0.0, 0.0, 0.0, "optimal", time.perf_counter() - began
        )
    model += pulp.LpAffineExpression(objective)
    model += pulp.LpAffineExpression(memory) <= capacity, "memory"
    blocks = np.sort([problem.hot_count(i, problem.min_batches(i)) for i in layer_vars])
    model += pulp.lpSum(layer_z.values()) <= int((blocks.cumsum() <= capacity).sum()), "layers"

    # The time limit covers building the model too.
    remaining = max(time_limit_s - (time.perf_counter() - began), 1.0)
    solver = _HighsWithStart(start_values, msg=False, timeLimit=remaining, gapRel=gap_rel)
    model.solve(solver)
    highs = model.solverModel
    counts = [0] * len(problem.layers)
    for i, ys in layer_vars.items():
        counts[i] = sum(1 for y in ys if (y.varValue or 0.0) > 0.5)
    # Guard against a solver that stopped without an incumbent better than the start.
    if problem.violations(counts) or problem.objective(counts) < problem.objective(start):
        counts = list(start)
    value = problem.objective(counts)
    # HiGHS minimizes the negated objective: its dual bound is minus our upper bound.
    bound = -highs.getInfo().mip_dual_bound
    bound = max(bound, value) if math.isfinite(bound) else math.inf
    model_status = highs.getModelStatus()
    status = STATUSES.get(model_status, f"highs: {highs.modelStatusToString(model_status)}")
    return SolveResult(
        counts, value, bound, relative_gap(value, bound), status, time.perf_counter() - began
    )
