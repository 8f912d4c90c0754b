"""The `place` and `hardware` commands through typer's test runner."""

from __future__ import annotations

import json

import numpy as np
import typer
from placement_helpers import power_law_counts, tiny_config, write_predictors, write_profile
from typer.testing import CliRunner

from thermocline.placement_solver.commands import register


def app() -> typer.Typer:
    main = typer.Typer()
    register(main)
    return main


def test_place_writes_json_and_png(tmp_path):
    config = tiny_config(n_layers=4, d_ff=64, d_model=16)
    profile = write_profile(
        tmp_path / "profile", config, power_law_counts(np.random.default_rng(1), 4, 64, 500), 500
    )
    predictors = write_predictors(tmp_path / "predictors", [4, 4, 4, 4])
    out = tmp_path / "placement.json"
    result = CliRunner().invoke(
        app(),
        [
            "place",
            "--profile",
            str(profile),
            "--predictors",
            str(predictors),
            "--hardware",
            "rtx4090-i9-13900k",
            "--vram-budget",
            "20KiB",
            "--context",
            "16",
            "--batch-size",
            "8",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "highs-ilp" in result.output and "GPU share" in result.output
    data = json.loads(out.read_text())
    assert data["vram_budget_bytes"] == 20 * 1024 and data["hardware"]["name"] == "PC-High"
    assert out.with_suffix(".png").is_file()


def test_place_reports_bad_sizes_without_a_traceback(tmp_path):
    config = tiny_config()
    profile = write_profile(tmp_path / "profile", config, [np.zeros(16, dtype=np.int64)] * 3, 10)
    result = CliRunner().invoke(
        app(), ["place", "--profile", str(profile), "--hardware", "h100", "--vram-budget", "4G"]
    )
    assert result.exit_code != 0
    assert "GiB" in str(result.exception)


def test_hardware_list_and_probe(tmp_path):
    listed = CliRunner().invoke(app(), ["hardware", "list"])
    assert listed.exit_code == 0 and "PC-High" in listed.output
    out = tmp_path / "local.toml"
    probed = CliRunner().invoke(
        app(), ["hardware", "probe", "--out", str(out), "--buffer", "8MiB", "--no-gpu"]
    )
    assert probed.exit_code == 0, probed.output
    assert "bandwidth_gbps" in out.read_text()
