"""Hardware profiles: presets, TOML parsing, sizes, and the probe on this (GPU-less) machine."""

from __future__ import annotations

import pytest

from thermocline.errors import ThermoclineError
from thermocline.placement_solver.hardware import (
    hardware_toml,
    list_presets,
    load_hardware,
    parse_hardware,
)
from thermocline.placement_solver.probe import probe_hardware
from thermocline.placement_solver.units import format_size, parse_size


def test_presets_carry_the_published_numbers():
    assert {"rtx4090-i9-13900k", "rtx2080ti-i7-12700k", "a100", "h100", "cpu-only"} <= set(
        list_presets()
    )
    high, low = (
        load_hardware("rtx4090-i9-13900k"),
        load_hardware("configs/hardware/rtx2080ti-i7-12700k.toml"),
    )
    assert (high.name, high.gpu_memory_bytes, high.gpu_bandwidth_gbps) == (
        "PC-High",
        24 << 30,
        1008.0,
    )
    assert (low.name, low.gpu_memory_bytes, low.gpu_bandwidth_gbps) == ("PC-Low", 11 << 30, 616.0)
    assert high.cpu_bandwidth_gbps == 67.5 and low.cpu_bandwidth_gbps == 38.4
    assert high.default_budget_bytes == 23 << 30
    for name in ("a100", "h100"):
        assert load_hardware(name).gpu_memory_bytes == 80 << 30
    cpu = load_hardware("cpu-only")
    assert not cpu.has_gpu and cpu.default_budget_bytes == 0


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ThermoclineError, match="h100"):
        load_hardware("tpu-v9")


def test_bad_profiles_are_clear_errors():
    with pytest.raises(ThermoclineError, match=r"\[cpu\] table"):
        parse_hardware({"name": "x"}, "x.toml")
    with pytest.raises(ThermoclineError, match="unknown keys"):
        parse_hardware({"cpu": {"bandwidth_gbps": 1, "speed": 3}}, "x.toml")
    with pytest.raises(ThermoclineError, match="bandwidth"):
        parse_hardware({"cpu": {"bandwidth_gbps": 10}, "gpu": {"memory": "8GiB"}}, "x.toml")
    with pytest.raises(ThermoclineError, match="expected a number"):
        parse_hardware({"cpu": {"bandwidth_gbps": "fast"}}, "x.toml")


def test_toml_round_trip(tmp_path):
    profile = load_hardware("h100")
    path = tmp_path / "h.toml"
    path.write_text(hardware_toml(profile))
    assert load_hardware(path) == profile


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4GiB", 4 << 30),
        ("512MiB", 512 << 20),
        ("24GB", 24 * 10**9),
        ("1.5 KiB", 1536),
        ("0", 0),
        ("7b", 7),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["4G", "lots", "-1GiB", "GiB"])
def test_parse_size_rejects(text):
    with pytest.raises(ThermoclineError, match="GiB"):
        parse_size(text)


def test_format_size():
    assert format_size(3.5 * 2**30) == "3.50 GiB"
    assert format_size(100) == "100 B"


def test_probe_measures_the_cpu(tmp_path):
    profile = probe_hardware(name="here", buffer_bytes=8 << 20, repeats=2, use_gpu=False)
    assert profile.cpu_bandwidth_gbps > 0 and profile.cpu_memory_bytes > 0
    assert not profile.has_gpu
    path = tmp_path / "here.toml"
    path.write_text(hardware_toml(profile))
    assert load_hardware(path).name == "here"
