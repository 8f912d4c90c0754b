"""Placement at paper scale: OPT-30B, Falcon-40B and LLaMA-70B shapes on PC-High and PC-Low.

Synthetic power-law profiles stand in for real ones: per layer, activation frequency falls
with rank as min(1, a * (rank + 1)^-alpha), alpha and a chosen so that the top 20% of neurons
carry ~80% of activations (the paper's skew) at a density of 5-15% active neurons per token,
varied across layers; counts are binomial draws over 1M tokens, neuron ids shuffled.

Part 1 runs the whole stage (`place`) at each preset's default budget (VRAM less its reserve),
fp16 weights, a 2048-token KV cache, no predictors, b = 64. Part 2 stresses the ILP alone on
the LLaMA-70B shape (80 x 448 batches; the 60 s, 0.1% gap target) at fixed neuron capacities
and C_l up to 3000 neurons, far above what real hardware gives, with an exact dynamic
program as an independent check of the ILP's objective.

    .venv/bin/python benchmarks/placement_scale.py [--out benchmarks/results/placement_scale.json]

Prints markdown tables and writes the rows as JSON. Times are wall-clock on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from thermocline.models.config import ModelConfig
from thermocline.placement_solver.greedy import solve_greedy
from thermocline.placement_solver.hardware import load_hardware
from thermocline.placement_solver.ilp import solve_ilp
from thermocline.placement_solver.inputs import ActivationProfile
from thermocline.placement_solver.planner import place
from thermocline.placement_solver.probe import cpu_name
from thermocline.placement_solver.problem import build_problem, exact_optimum
from thermocline.placement_solver.units import format_size

TOKENS = 1_000_000
SHAPES = {
    # OPT-30B: fc1/fc2 with biases, tied embeddings.
    "OPT-30B": ModelConfig(
        arch="opt", vocab_size=50272, d_model=7168, n_layers=48, n_heads=56, n_kv_heads=56,
        d_ff=28672, activation="relu", qkv_bias=True, o_bias=True, mlp_bias=True,
        tie_embeddings=True,
    ),
    # ReluFalcon-40B: an ungated MLP (the "opt" layout's FFN) with 8 KV groups, no biases.
    "Falcon-40B": ModelConfig(
        arch="opt", vocab_size=65024, d_model=8192, n_layers=60, n_heads=128, n_kv_heads=8,
        d_ff=32768, activation="relu", tie_embeddings=True,
    ),
    # ReluLLaMA-2-70B.
    "LLaMA-70B": ModelConfig(
        arch="llama", vocab_size=32000, d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8,
        d_ff=28672, activation="relu",
    ),
}  # fmt: skip
HARDWARE = {"PC-High": "rtx4090-i9-13900k", "PC-Low": "rtx2080ti-i7-12700k"}


def power_law_frequencies(d_ff: int, density: float, top20: float) -> np.ndarray:
    """Frequencies by rank with mean `density` and the top 20% holding `top20` of the mass."""
    ranks = np.arange(1, d_ff + 1, dtype=np.float64)

    def shaped(alpha: float) -> np.ndarray:
        curve = ranks**-alpha
        low, high = 0.0, 1.0 / curve[-1]  # scale so the mean is `density`, capped at 1
        for _ in range(50):
            mid = (low + high) / 2
            low, high = (mid, high) if np.minimum(1, mid * curve).mean() < density else (low, mid)
        return np.minimum(1.0, low * curve)

    low, high = 0.0, 3.0
    for _ in range(30):  # bisect alpha for the skew
        alpha = (low + high) / 2
        frequency = shaped(alpha)
        share = frequency[: d_ff // 5].sum() / frequency.sum()
        low, high = (alpha, high) if share < top20 else (low, alpha)
    return shaped(low)


def synthetic_profile(name: str, config: ModelConfig, seed: int = 0) -> ActivationProfile:
    rng = np.random.default_rng(seed)
    counts = []
    for layer in range(config.n_layers):
        depth = layer / max(config.n_layers - 1, 1)
        density = 0.05 + 0.10 * depth + rng.uniform(-0.01, 0.01)  # deeper layers fire more
        frequency = power_law_frequencies(config.d_ff, density, rng.uniform(0.78, 0.82))
        counts.append(rng.permutation(rng.binomial(TOKENS, frequency)).astype(np.int64))
    return ActivationProfile(name, f"synthetic-{name}", config, TOKENS, counts, "synthetic", "")


def top20_share(profile: ActivationProfile) -> float:
    shares = [np.sort(c)[::-1][: len(c) // 5].sum() / c.sum() for c in profile.counts]
    return float(np.mean(shares))


def stage_rows(profiles: dict[str, ActivationProfile], time_limit: float) -> list[dict]:
    rows = []
    for name, profile in profiles.items():
        for label, preset in HARDWARE.items():
            hardware = load_hardware(preset)
            cpu = time.process_time()  # HiGHS's threads included; wall time suffers from load
            placement = place(profile, hardware, time_limit_s=time_limit, gap_rel=1e-4)
            cpu_s = time.process_time() - cpu
            solver = placement.solver
            attention = sum(r.on_gpu for r in placement.residents if r.name.endswith(".attention"))
            print(f"{name} on {label}: {solver.status} in {solver.seconds:.1f} s", flush=True)
            rows.append({
                "model": name, "hardware": label, "budget_bytes": placement.vram_budget_bytes,
                "dense_gpu_bytes": placement.dense_gpu_bytes,
                "attention_layers_on_gpu": attention, "n_layers": profile.config.n_layers,
                "lm_head_on_gpu": "lm_head" in placement.gpu_residents,
                "hot_neurons": sum(placement.hot_counts),
                "hot_fraction": placement.summary["hot_fraction"],
                "gpu_share": placement.total_gpu_share, "status": solver.status,
                "objective": solver.objective, "bound": solver.bound, "gap": solver.gap,
                "seconds": solver.seconds, "place_cpu_seconds": cpu_s,
                "greedy_objective": solver.greedy_objective,
                "c_l_min": min(solver.min_hot), "c_l_max": max(solver.min_hot),
            })  # fmt: skip
    return rows


def stress_rows(profile: ActivationProfile, time_limit: float) -> list[dict]:
    """The ILP alone at several neuron capacities and C_l, checked against the exact DP."""
    rows = []
    config = profile.config
    for share in (0.01, 0.1, 0.5):
        for c_l in (64, 1024, 3000):
            capacity = int(share * config.n_layers * config.d_ff) + 37  # not a multiple of b
            problem = build_problem(profile.impacts(), 64, capacity, [c_l] * config.n_layers)
            began = time.perf_counter()
            greedy = solve_greedy(problem)
            greedy_s = time.perf_counter() - began
            cpu = time.process_time()
            result = solve_ilp(problem, greedy, time_limit, 1e-4)
            cpu_s = time.process_time() - cpu
            rows.append({
                "model": profile.model_name, "capacity_share": share, "c_l": c_l,
                "batches": sum(layer.n_batches for layer in problem.layers),
                "status": result.status, "objective": result.objective,
                "bound": result.bound, "gap": result.gap, "seconds": result.seconds,
                "cpu_seconds": cpu_s, "greedy_objective": problem.objective(greedy),
                "greedy_seconds": greedy_s,
                "exact_objective": exact_optimum(problem),
            })  # fmt: skip
            print(
                f"stress {share:.0%} C_l={c_l}: {result.status} in {result.seconds:.1f} s",
                flush=True,
            )
    return rows


def gain(row: dict) -> str:
    if not row["greedy_objective"]:
        return "-"
    return f"{row['objective'] / row['greedy_objective'] - 1:+.3%}"


def gap(row: dict) -> str:
    return f"{row['gap']:.4%}" if row["gap"] is not None else "-"


def print_tables(stage: list[dict], stress: list[dict]) -> None:
    print(
        "| model | hardware | budget | dense on GPU | attention layers | hot neurons | "
        "GPU share | status | objective | bound | gap | ILP wall s | place CPU s | greedy | "
        "ILP vs greedy | C_l |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in stage:
        print(
            f"| {r['model']} | {r['hardware']} | {format_size(r['budget_bytes'])} | "
            f"{format_size(r['dense_gpu_bytes'])} | {r['attention_layers_on_gpu']}/{r['n_layers']}"
            f" | {r['hot_neurons']} ({r['hot_fraction']:.1%}) | {r['gpu_share']:.1%} | "
            f"{r['status']} | {r['objective']:.2f} | {r['bound']:.2f} | {gap(r)} | "
            f"{r['seconds']:.2f} | {r['place_cpu_seconds']:.2f} | {r['greedy_objective']:.2f} | "
            f"{gain(r)} | {r['c_l_min']}-{r['c_l_max']} |"
        )
    print()
    print(
        "| model | capacity | C_l | batches | status | objective | bound | gap | wall s | "
        "CPU s | greedy | ILP vs greedy | exact (DP) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in stress:
        print(
            f"| {r['model']} | {r['capacity_share']:.0%} | {r['c_l']} | {r['batches']} | "
            f"{r['status']} | {r['objective']:.2f} | {r['bound']:.2f} | {gap(r)} | "
            f"{r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['greedy_objective']:.2f} | "
            f"{gain(r)} | {r['exact_objective']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/placement_scale.json"))
    parser.add_argument("--time-limit", type=float, default=60.0)
    args = parser.parse_args()
    profiles = {name: synthetic_profile(name, config) for name, config in SHAPES.items()}
    for name, profile in profiles.items():
        print(
            f"{name}: top-20% neurons carry {top20_share(profile):.1%} of activations", flush=True
        )
    stage = stage_rows(profiles, args.time_limit)
    stress = stress_rows(profiles["LLaMA-70B"], args.time_limit)
    print_tables(stage, stress)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),  # other work on the machine inflates wall times
    }
    args.out.write_text(
        json.dumps({"machine": machine, "stage": stage, "stress": stress}, indent=2)
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
