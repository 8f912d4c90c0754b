"""`place`: profile + hardware + budget -> Placement, the stage's one entry point.

Cases, in the order they are decided:
  - no GPU (hardware without one, or a budget of 0): every neuron and tensor on the CPU,
    status "cpu-only";
  - a budget that holds every dense resident and every neuron: all on the GPU, status
    "all-on-gpu", no ILP;
  - a budget below the required dense residents (norms, predictors): ThermoclineError that
    names the minimum;
  - otherwise dense residents in priority order (residents.py), then the ILP for the neurons,
    with the greedy placement as baseline and MIP start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from thermocline.errors import ThermoclineError
from thermocline.placement_solver.greedy import solve_greedy
from thermocline.placement_solver.hardware import HardwareProfile
from thermocline.placement_solver.ilp import solve_ilp
from thermocline.placement_solver.inputs import ActivationProfile
from thermocline.placement_solver.placement import Placement, SolverReport
from thermocline.placement_solver.problem import build_problem, min_hot_neurons
from thermocline.placement_solver.residents import (
    Resident,
    dense_units,
    dtype_bytes,
    neuron_bytes,
    place_dense,
)
from thermocline.placement_solver.units import format_size


def _check_options(
    dtype: str, context: int, batch_size: int, time_limit_s: float, gap_rel: float
) -> None:
    dtype_bytes(dtype)
    if context <= 0:
        raise ThermoclineError(f"--context must be a positive number of tokens, not {context}")
    if batch_size <= 0:
        raise ThermoclineError(f"--batch-size must be at least 1, not {batch_size}")
    if time_limit_s <= 0:
        raise ThermoclineError(f"--time-limit must be positive, not {time_limit_s}")
    if not 0 <= gap_rel < 1:
        raise ThermoclineError(f"--gap must be in [0, 1), not {gap_rel}")


def _budget(hardware: HardwareProfile, vram_budget: int | None) -> int:
    if vram_budget is None:
        return hardware.default_budget_bytes
    if vram_budget < 0:
        raise ThermoclineError("--vram-budget cannot be negative")
    if vram_budget and not hardware.has_gpu:
        raise ThermoclineError(
            f"hardware {hardware.name!r} has no GPU, so a VRAM budget of "
            f"{format_size(vram_budget)} cannot be used; drop --vram-budget or pick a GPU profile"
        )
    if vram_budget > hardware.gpu_memory_bytes:
        raise ThermoclineError(
            f"--vram-budget {format_size(vram_budget)} exceeds the "
            f"{format_size(hardware.gpu_memory_bytes)} of {hardware.gpu_name or hardware.name}"
        )
    return vram_budget


@dataclass
class _Request:
    """One call of `place`: what every outcome records besides the solver's choice."""

    profile: ActivationProfile
    hardware: HardwareProfile
    budget: int
    dtype: str
    context: int
    batch_size: int
    time_limit_s: float
    gap_rel: float

    def exact_report(self, status: str, objective: float, min_hot: list[int]) -> SolverReport:
        """The report of a placement that needed no search: bound = objective."""
        return SolverReport(
            name="none",
            status=status,
            objective=objective,
            bound=objective,
            gap=0.0,
            seconds=0.0,
            greedy_objective=objective,
            batch_size=self.batch_size,
            min_hot=min_hot,
            time_limit_s=self.time_limit_s,
            gap_tolerance=self.gap_rel,
        )

    def placement(
        self, residents: list[Resident], counts: list[int], solver: SolverReport
    ) -> Placement:
        """`counts[l]` hottest neurons of each layer on the GPU (the order LayerBatches uses)."""
        config, impacts = self.profile.config, self.profile.impacts()
        hot = [np.argsort(-x, kind="stable")[:k] for x, k in zip(impacts, counts, strict=True)]
        active = [float(x.sum()) for x in impacts]
        served = [float(x[ids].sum()) for x, ids in zip(impacts, hot, strict=True)]
        return Placement(
            model_name=self.profile.model_name,
            model_digest=self.profile.model_digest,
            d_ff=config.d_ff,
            dtype=self.dtype,
            context=self.context,
            vram_budget_bytes=self.budget,
            neuron_bytes=neuron_bytes(config, self.dtype),
            hardware=self.hardware,
            residents=residents,
            hot_neurons=hot,
            expected_active=active,
            gpu_share=[s / a if a else 0.0 for s, a in zip(served, active, strict=True)],
            solver=solver,
        )


def place(
    profile: ActivationProfile,
    hardware: HardwareProfile,
    vram_budget: int | None = None,
    dtype: str = "fp16",
    context: int = 2048,
    predictor_ranks: list[int] | None = None,
    batch_size: int = 64,
    time_limit_s: float = 60.0,
    gap_rel: float = 1e-4,
) -> Placement:
    """Decide which dense tensors and FFN neurons live on the GPU.

    `vram_budget` in bytes (None: the hardware's memory less its reserve); `predictor_ranks`
    per layer, or None to place without predictors.
    """
    _check_options(dtype, context, batch_size, time_limit_s, gap_rel)
    config = profile.config
    if predictor_ranks is not None and len(predictor_ranks) != config.n_layers:
        raise ThermoclineError(
            f"{len(predictor_ranks)} predictor ranks given for a model of {config.n_layers} layers"
        )
    budget = _budget(hardware, vram_budget)
    request = _Request(profile, hardware, budget, dtype, context, batch_size, time_limit_s, gap_rel)
    units = dense_units(config, dtype, context, predictor_ranks)
    residents = [r for unit in units for r in unit]
    if budget == 0:
        return request.placement(
            residents, [0] * config.n_layers, request.exact_report("cpu-only", 0.0, [])
        )

    impacts = profile.impacts()
    per_neuron = neuron_bytes(config, dtype)
    min_hot = [
        min_hot_neurons(x, per_neuron, hardware, config.d_model, dtype_bytes(dtype))
        for x in impacts
    ]
    if sum(r.bytes for r in residents) + config.n_layers * config.d_ff * per_neuron <= budget:
        for resident in residents:
            resident.on_gpu = True
        everything = float(sum(x.sum() for x in impacts))
        solver = request.exact_report("all-on-gpu", everything, min_hot)
        return request.placement(residents, [config.d_ff] * config.n_layers, solver)

    residents, dense_used = place_dense(units, budget)
    problem = build_problem(impacts, batch_size, (budget - dense_used) // per_neuron, min_hot)
    greedy = solve_greedy(problem)
    result = solve_ilp(problem, greedy, time_limit_s, gap_rel)
    solver = SolverReport(
        name="highs-ilp",
        status=result.status,
        objective=result.objective,
        bound=result.bound,
        gap=result.gap,
        seconds=result.seconds,
        greedy_objective=problem.objective(greedy),
        batch_size=batch_size,
        min_hot=min_hot,
        time_limit_s=time_limit_s,
        gap_tolerance=gap_rel,
    )
    counts = [problem.hot_count(i, k) for i, k in enumerate(result.counts)]
    return request.placement(residents, counts, solver)
