"""CLI: `thermocline place` and `thermocline hardware probe|list` (thin wrappers)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from thermocline.placement_solver.hardware import hardware_toml, list_presets, load_hardware
from thermocline.placement_solver.inputs import load_predictor_ranks, load_profile
from thermocline.placement_solver.placement import save_placement
from thermocline.placement_solver.planner import place
from thermocline.placement_solver.probe import probe_hardware
from thermocline.placement_solver.report import plot_placement, summary_lines
from thermocline.placement_solver.units import format_size, parse_size

console = Console()
hardware_app = typer.Typer(help="Hardware profiles: list the presets, or measure this machine.")


def place_command(
    profile: Path = typer.Option(..., help="Profile directory written by `thermocline profile`."),
    hardware: str = typer.Option(
        ..., help="Hardware profile: a TOML file or a preset name (`thermocline hardware list`)."
    ),
    predictors: Path | None = typer.Option(
        None, help="Predictors directory; their weights are placed on the GPU."
    ),
    vram_budget: str | None = typer.Option(
        None,
        help="VRAM for weights and KV cache, e.g. 4GiB, 512MiB, 24GB; 0 for CPU-only. "
        "Default: the GPU's memory less the profile's reserve.",
    ),
    dtype: str = typer.Option("fp16", help="Weight dtype: fp32, fp16 or bf16."),
    context: int = typer.Option(2048, help="Tokens of KV cache to hold on the GPU."),
    batch_size: int = typer.Option(64, help="Neurons per ILP batch (b)."),
    time_limit: float = typer.Option(60.0, help="Solver time limit, seconds."),
    gap: float = typer.Option(1e-4, help="Relative optimality gap at which the solver stops."),
    out: Path = typer.Option(Path("placement.json"), help="Where to write the placement."),
    plot: Path | None = typer.Option(None, help="PNG of the placement; default: OUT with .png."),
) -> None:
    """Place FFN neurons and dense tensors between GPU and CPU (the paper's ILP)."""
    activation_profile = load_profile(profile)
    ranks = load_predictor_ranks(predictors, activation_profile) if predictors else None
    placement = place(
        activation_profile,
        load_hardware(hardware),
        vram_budget=parse_size(vram_budget) if vram_budget is not None else None,
        dtype=dtype,
        context=context,
        predictor_ranks=ranks,
        batch_size=batch_size,
        time_limit_s=time_limit,
        gap_rel=gap,
    )
    save_placement(placement, out)
    plot_path = plot or out.with_suffix(".png")
    plot_placement(placement, plot_path)
    for line in summary_lines(placement):
        console.print(line, highlight=False)
    console.print(f"wrote {out} and {plot_path}", highlight=False)


@hardware_app.command("probe")
def probe_command(
    out: Path = typer.Option(
        Path("configs/hardware/local.toml"), help="Where to write the profile."
    ),
    name: str = typer.Option("local", help="Name recorded in the profile."),
    buffer: str = typer.Option("1GiB", help="Bytes moved per bandwidth measurement."),
    gpu: bool = typer.Option(True, help="Measure the GPU too when CUDA is available."),
) -> None:
    """Measure this machine's bandwidths and latencies and write a hardware profile."""
    profile = probe_hardware(name=name, buffer_bytes=parse_size(buffer), use_gpu=gpu)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(hardware_toml(profile))
    console.print(profile.describe(), highlight=False)
    if profile.has_gpu:
        console.print(
            f"PCIe {profile.pcie_h2d_gbps:.1f} GB/s to GPU, {profile.pcie_d2h_gbps:.1f} GB/s back; "
            f"launch {profile.launch_latency_us:.1f} us, sync {profile.sync_latency_us:.1f} us",
            highlight=False,
        )
    console.print(f"wrote {out}", highlight=False)


@hardware_app.command("list")
def list_command() -> None:
    """List the hardware presets --hardware accepts by name."""
    table = Table()
    table.add_column("preset", no_wrap=True)  # what --hardware takes: never cut it
    for header in ("name", "GPU", "VRAM", "GPU GB/s", "CPU GB/s"):
        table.add_column(header)
    for preset, path in list_presets().items():
        profile = load_hardware(path)
        if profile.has_gpu:
            gpu = (profile.gpu_name, format_size(profile.gpu_memory_bytes))
            gpu_bw = f"{profile.gpu_bandwidth_gbps:g}"
        else:
            gpu, gpu_bw = ("-", "-"), "-"
        table.add_row(preset, profile.name, *gpu, gpu_bw, f"{profile.cpu_bandwidth_gbps:g}")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add `place` and the `hardware` group to the main app."""
    app.command("place")(place_command)
    app.add_typer(hardware_app, name="hardware")
