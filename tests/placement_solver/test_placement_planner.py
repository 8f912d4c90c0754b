"""`place` end to end on tiny profiles: degenerate cases, invariants, placement.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from placement_helpers import (
    gpu_hardware,
    power_law_counts,
    tiny_config,
    tiny_profile,
    write_predictors,
    write_profile,
)

from thermocline.errors import ThermoclineError
from thermocline.placement_solver import load_placement
from thermocline.placement_solver.hardware import load_hardware
from thermocline.placement_solver.inputs import load_predictor_ranks, load_profile
from thermocline.placement_solver.placement import save_placement
from thermocline.placement_solver.planner import place
from thermocline.placement_solver.report import plot_placement, summary_lines
from thermocline.placement_solver.residents import dense_units, neuron_bytes

TOKENS = 1000


@pytest.fixture
def profile():
    config = tiny_config(n_layers=3, d_ff=32)
    return tiny_profile(config, power_law_counts(np.random.default_rng(0), 3, 32, TOKENS), TOKENS)


def total_bytes(profile, dtype="fp16", context=2048, ranks=None):
    config = profile.config
    dense = sum(r.bytes for unit in dense_units(config, dtype, context, ranks) for r in unit)
    return dense + config.n_layers * config.d_ff * neuron_bytes(config, dtype)


def test_budget_holding_the_whole_model_puts_everything_on_the_gpu(profile):
    placement = place(profile, gpu_hardware(), vram_budget=total_bytes(profile))
    assert placement.solver.status == "all-on-gpu" and placement.solver.name == "none"
    assert placement.hot_counts == [32, 32, 32]
    assert all(r.on_gpu for r in placement.residents)
    assert placement.total_gpu_share == pytest.approx(1.0)
    # Hot ids come most active first.
    impacts = profile.impacts()[0]
    assert np.all(np.diff(impacts[placement.hot_neurons[0]]) <= 0)


def test_budget_below_the_dense_residents_names_the_minimum(profile):
    ranks = [4, 4, 4]
    config = profile.config
    minimum = sum(
        r.bytes
        for r in dense_units(config, "fp16", 2048, ranks)[0]
        + dense_units(config, "fp16", 2048, ranks)[1]
    )
    with pytest.raises(ThermoclineError, match=rf"minimum is .*\({minimum} bytes\)"):
        place(profile, gpu_hardware(), vram_budget=minimum - 1, predictor_ranks=ranks)


def test_cpu_only_hardware_gives_a_cpu_only_placement(profile):
    placement = place(profile, load_hardware("cpu-only"))
    assert placement.solver.status == "cpu-only"
    assert placement.hot_counts == [0, 0, 0] and placement.gpu_residents == []
    assert placement.total_gpu_share == 0.0
    with pytest.raises(ThermoclineError, match="no GPU"):
        place(profile, load_hardware("cpu-only"), vram_budget=1 << 30)


def test_zero_budget_on_a_gpu_machine_is_cpu_only(profile):
    assert place(profile, gpu_hardware(), vram_budget=0).solver.status == "cpu-only"


def test_budget_above_the_gpu_memory_is_refused(profile):
    with pytest.raises(ThermoclineError, match="exceeds"):
        place(profile, gpu_hardware(memory=1 << 20), vram_budget=2 << 20)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("dtype", "int4", "dtype"),
        ("context", 0, "context"),
        ("batch_size", 0, "batch-size"),
        ("gap_rel", 1.5, "gap"),
        ("time_limit_s", 0, "time-limit"),
    ],
)
def test_bad_options_are_clear_errors(profile, option, value, message):
    with pytest.raises(ThermoclineError, match=message):
        place(profile, gpu_hardware(), vram_budget=1 << 20, **{option: value})


def test_partial_budget_uses_the_ilp_and_keeps_dense_residents_in_order(profile):
    dense = sum(r.bytes for unit in dense_units(profile.config, "fp16", 16, None) for r in unit)
    budget = dense + 40 * neuron_bytes(profile.config, "fp16")
    placement = place(profile, gpu_hardware(), vram_budget=budget, context=16, batch_size=4)
    assert placement.solver.name == "highs-ilp"
    assert placement.solver.status == "optimal"
    assert all(r.on_gpu for r in placement.residents)
    assert 0 < sum(placement.hot_counts) <= 40
    assert placement.solver.objective >= placement.solver.greedy_objective


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_layers=st.integers(1, 4),
    d_ff=st.integers(1, 40),
    batch_size=st.integers(1, 8),
    budget_share=st.floats(0, 1.2),
    sync_latency_us=st.floats(0, 0.05),
    with_predictors=st.booleans(),
)
def test_placement_respects_every_constraint(
    seed, n_layers, d_ff, batch_size, budget_share, sync_latency_us, with_predictors
):
    rng = np.random.default_rng(seed)
    tokens = int(rng.integers(1, 500))
    config = tiny_config(n_layers=n_layers, d_ff=d_ff)
    counts = [rng.integers(0, tokens + 1, d_ff) for _ in range(n_layers)]
    profile = tiny_profile(config, counts, tokens)
    ranks = [int(r) for r in rng.integers(1, 6, n_layers)] if with_predictors else None
    units = dense_units(config, "fp16", 8, ranks)
    minimum = sum(r.bytes for unit in units for r in unit if r.required)
    budget = minimum + int(budget_share * (total_bytes(profile, context=8, ranks=ranks) - minimum))
    placement = place(
        profile,
        gpu_hardware(sync_latency_us),
        vram_budget=budget,
        context=8,
        predictor_ranks=ranks,
        batch_size=batch_size,
        gap_rel=0.0,
    )
    solver, impacts = placement.solver, profile.impacts()
    assert placement.dense_gpu_bytes + placement.neuron_gpu_bytes <= budget
    on_gpu = [r.on_gpu for r in placement.residents]
    assert on_gpu == sorted(on_gpu, reverse=True)  # a prefix of the priority order
    served = 0.0
    for layer, ids in enumerate(placement.hot_neurons):
        assert len(ids) == 0 or len(ids) >= solver.min_hot[layer]
        cold = np.setdiff1d(np.arange(d_ff), ids)
        if len(ids) and len(cold):
            assert impacts[layer][ids].min() >= impacts[layer][cold].max()
        served += impacts[layer][ids].sum()
    assert solver.objective == pytest.approx(served)
    assert solver.objective >= solver.greedy_objective - 1e-9


def test_placement_round_trips_through_json(profile, tmp_path):
    placement = place(profile, gpu_hardware(), vram_budget=total_bytes(profile) // 2, batch_size=4)
    path = tmp_path / "out" / "placement.json"
    save_placement(placement, path)
    loaded = load_placement(path)
    assert [ids.tolist() for ids in loaded.hot_neurons] == [
        ids.tolist() for ids in placement.hot_neurons
    ]
    assert loaded.gpu_residents == placement.gpu_residents
    assert loaded.model_digest == "digest0123456789"
    assert loaded.summary == placement.summary
    assert loaded.hardware == placement.hardware
    data = json.loads(path.read_text())
    assert data["format"] == "thermocline-placement" and data["version"] == 1
    assert data["solver"]["batch_size"] == 4 and len(data["solver"]["min_hot"]) == 3
    assert data["priority_order"][0] == "norms"
    assert list(tmp_path.joinpath("out").iterdir()) == [path]  # no temporary file left


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format="other"), "not a placement file"),
        (lambda d: d.update(version=2), "version 2"),
        (lambda d: d["layers"][0].update(hot_neurons=[99], hot_count=1), "outside"),
        (lambda d: d["layers"][0].update(hot_neurons=[1, 1], hot_count=2), "repeated"),
        (lambda d: d["layers"][0].update(hot_count=5), "hot_count"),
        (lambda d: d["layers"].pop(), "layers listed"),
        (lambda d: d.pop("solver"), "malformed"),
    ],
)
def test_load_placement_rejects_bad_files(profile, tmp_path, edit, message):
    path = tmp_path / "placement.json"
    save_placement(place(profile, gpu_hardware(), vram_budget=0), path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ThermoclineError, match=message):
        load_placement(path)
    with pytest.raises(ThermoclineError, match="not found"):
        load_placement(tmp_path / "missing.json")


def test_profile_artifact_loads_and_mismatches_are_clear(tmp_path):
    config = tiny_config(n_layers=2, d_ff=8)
    counts = [np.arange(8), np.arange(8)]
    profile = load_profile(write_profile(tmp_path / "good", config, counts, 10))
    assert profile.impacts()[1][7] == pytest.approx(0.7)
    with pytest.raises(ThermoclineError, match="more than the model"):
        load_profile(write_profile(tmp_path / "extra", config, counts + [np.arange(8)], 10))
    with pytest.raises(ThermoclineError, match="lacks counts"):
        load_profile(write_profile(tmp_path / "short", config, counts[:1], 10))
    with pytest.raises(ThermoclineError, match="d_ff=8"):
        load_profile(write_profile(tmp_path / "wide", config, [np.arange(9)] * 2, 10))
    with pytest.raises(ThermoclineError, match="outside 0..5"):
        load_profile(write_profile(tmp_path / "over", config, counts, 5))
    with pytest.raises(ThermoclineError, match="not found"):
        load_profile(tmp_path / "nowhere")
    with pytest.raises(ThermoclineError, match="another model"):
        load_predictor_ranks(write_predictors(tmp_path / "p3", [2, 2, 2]), profile)
    with pytest.raises(ThermoclineError, match="digest"):
        load_predictor_ranks(write_predictors(tmp_path / "pd", [2, 2], digest="other"), profile)
    assert load_predictor_ranks(write_predictors(tmp_path / "ok", [2, 3]), profile) == [2, 3]


def test_report_writes_a_png_and_a_summary(profile, tmp_path):
    placement = place(profile, gpu_hardware(), vram_budget=total_bytes(profile) // 2, batch_size=4)
    plot_placement(placement, tmp_path / "placement.png")
    assert (tmp_path / "placement.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = "\n".join(summary_lines(placement))
    assert "highs-ilp" in text and "greedy objective" in text and "GPU share" in text
