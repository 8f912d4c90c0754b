"""Hardware profiles: the memory sizes, bandwidths and latencies the placement depends on.

A profile is a TOML file (presets in configs/hardware/, or one written by
`thermocline hardware probe`):

    name = "PC-High"
    description = "..."
    [cpu]
    name = "Intel Core i9-13900K"
    memory = "192GiB"          # sizes: a string with a unit, or bytes as an integer
    bandwidth_gbps = 67.5      # sustained DRAM read bandwidth, GB/s (1e9 bytes/s)
    [gpu]                      # leave the table out for a machine without a GPU
    name = "NVIDIA GeForce RTX 4090"
    memory = "24GiB"
    reserved = "1GiB"          # CUDA context, workspaces, activations: never for weights
    bandwidth_gbps = 1008.0    # device memory bandwidth
    pcie_h2d_gbps = 25.0       # host to device
    pcie_d2h_gbps = 25.0       # device to host
    launch_latency_us = 4.0    # enqueueing one kernel
    sync_latency_us = 12.0     # one CPU-GPU synchronization round trip
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thermocline.errors import ThermoclineError
from thermocline.placement_solver.units import format_size, parse_size

# Presets live at the repository root; the working directory's copy wins so a user can add one.
PRESET_DIRS = (
    Path("configs/hardware"),
    Path(__file__).resolve().parents[2] / "configs" / "hardware",
)


@dataclass
class HardwareProfile:
    name: str  # short label, e.g. "PC-High"
    cpu_bandwidth_gbps: float  # sustained CPU DRAM read bandwidth, GB/s
    description: str = ""
    cpu_name: str = ""
    cpu_memory_bytes: int = 0
    gpu_name: str = ""  # empty: no GPU
    gpu_memory_bytes: int = 0
    gpu_reserved_bytes: int = 0  # held back from weights (context, workspaces, activations)
    gpu_bandwidth_gbps: float = 0.0
    pcie_h2d_gbps: float = 0.0
    pcie_d2h_gbps: float = 0.0
    launch_latency_us: float = 0.0
    sync_latency_us: float = 0.0

    def __post_init__(self) -> None:
        if self.cpu_bandwidth_gbps <= 0:
            raise ThermoclineError(f"hardware {self.name!r}: cpu bandwidth_gbps must be > 0")
        if self.has_gpu:
            for key in ("gpu_bandwidth_gbps", "pcie_h2d_gbps", "pcie_d2h_gbps"):
                if getattr(self, key) <= 0:
                    raise ThermoclineError(f"hardware {self.name!r}: gpu {key[4:]} must be > 0")
            if self.gpu_reserved_bytes >= self.gpu_memory_bytes:
                raise ThermoclineError(
                    f"hardware {self.name!r}: gpu reserved memory must be below its memory"
                )

    @property
    def has_gpu(self) -> bool:
        return self.gpu_memory_bytes > 0

    @property
    def default_budget_bytes(self) -> int:
        """VRAM for weights and KV cache when the user gives no budget."""
        return self.gpu_memory_bytes - self.gpu_reserved_bytes if self.has_gpu else 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HardwareProfile:
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) - known or "name" not in data:
            raise ThermoclineError(f"not a hardware profile record: {data!r}")
        return cls(**data)

    def describe(self) -> str:
        cpu = f"{self.cpu_name or 'CPU'} ({self.cpu_bandwidth_gbps:g} GB/s)"
        if not self.has_gpu:
            return f"{self.name}: {cpu}, no GPU"
        return (
            f"{self.name}: {self.gpu_name or 'GPU'} ({format_size(self.gpu_memory_bytes)}, "
            f"{self.gpu_bandwidth_gbps:g} GB/s) + {cpu}"
        )


def _size(value: Any, where: str) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return parse_size(value)
    raise ThermoclineError(f'{where}: expected a size such as "24GiB", got {value!r}')


def _number(value: Any, where: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ThermoclineError(f"{where}: expected a number, got {value!r}")


def parse_hardware(data: dict[str, Any], source: str) -> HardwareProfile:
    """A HardwareProfile from the parsed TOML of `source` (named in errors)."""
    unknown = set(data) - {"name", "description", "cpu", "gpu"}
    if unknown:
        raise ThermoclineError(f"{source}: unknown keys {', '.join(sorted(unknown))}")
    cpu, gpu = data.get("cpu"), data.get("gpu", {})
    if not isinstance(cpu, dict) or "bandwidth_gbps" not in cpu:
        raise ThermoclineError(f"{source}: needs a [cpu] table with bandwidth_gbps")
    if not isinstance(gpu, dict):
        raise ThermoclineError(f"{source}: [gpu] must be a table")
    fields: dict[str, Any] = {
        "name": str(data.get("name", Path(source).stem)),
        "description": str(data.get("description", "")),
        "cpu_name": str(cpu.get("name", "")),
        "cpu_memory_bytes": _size(cpu.get("memory", 0), f"{source} [cpu] memory"),
        "cpu_bandwidth_gbps": _number(cpu["bandwidth_gbps"], f"{source} [cpu] bandwidth_gbps"),
    }
    gpu_keys = {"name", "memory", "reserved", "bandwidth_gbps", "pcie_h2d_gbps", "pcie_d2h_gbps"}
    gpu_keys |= {"launch_latency_us", "sync_latency_us"}
    for table, allowed in ((cpu, {"name", "memory", "bandwidth_gbps"}), (gpu, gpu_keys)):
        extra = set(table) - allowed
        if extra:
            raise ThermoclineError(f"{source}: unknown keys {', '.join(sorted(extra))}")
    if gpu:
        if "memory" not in gpu:
            raise ThermoclineError(f"{source}: the [gpu] table needs memory")
        fields |= {
            "gpu_name": str(gpu.get("name", "")),
            "gpu_memory_bytes": _size(gpu["memory"], f"{source} [gpu] memory"),
            "gpu_reserved_bytes": _size(gpu.get("reserved", 0), f"{source} [gpu] reserved"),
        }
        for key in sorted(gpu_keys - {"name", "memory", "reserved"}):
            field = "gpu_bandwidth_gbps" if key == "bandwidth_gbps" else key
            fields[field] = _number(gpu.get(key, 0.0), f"{source} [gpu] {key}")
    return HardwareProfile(**fields)


def list_presets() -> dict[str, Path]:
    """Preset name (file stem) -> path, the working directory's presets first."""
    found: dict[str, Path] = {}
    for directory in PRESET_DIRS:
        if directory.is_dir():
            for path in sorted(directory.glob("*.toml")):
                found.setdefault(path.stem, path)
    return found


def load_hardware(spec: str | Path) -> HardwareProfile:
    """The profile in the TOML file `spec`, or the preset of that name (e.g. "h100")."""
    path = Path(spec)
    if not path.is_file():
        presets = list_presets()
        # "configs/hardware/h100.toml" from another directory still finds the preset.
        bare = path.parent == Path(".") or path.parent.as_posix().endswith("configs/hardware")
        if path.stem not in presets or not bare:
            known = ", ".join(presets) or "none found"
            raise ThermoclineError(
                f"no hardware profile {str(spec)!r}: give a TOML file or a preset ({known}); "
                "`thermocline hardware probe` writes one for this machine"
            )
        path = presets[path.stem]
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ThermoclineError(f"{path}: not valid TOML ({error})") from None
    return parse_hardware(data, str(path))


def hardware_toml(profile: HardwareProfile) -> str:
    """The TOML text that `load_hardware` reads back as `profile` (sizes in bytes)."""
    lines = [f"name = {_quote(profile.name)}", f"description = {_quote(profile.description)}"]
    lines += ["", "[cpu]", f"name = {_quote(profile.cpu_name)}"]
    lines += [f"memory = {profile.cpu_memory_bytes}"]
    lines += [f"bandwidth_gbps = {profile.cpu_bandwidth_gbps:.1f}"]
    if profile.has_gpu:
        lines += ["", "[gpu]", f"name = {_quote(profile.gpu_name)}"]
        lines += [
            f"memory = {profile.gpu_memory_bytes}",
            f"reserved = {profile.gpu_reserved_bytes}",
        ]
        lines += [f"bandwidth_gbps = {profile.gpu_bandwidth_gbps:.1f}"]
        for key in ("pcie_h2d_gbps", "pcie_d2h_gbps"):
            lines.append(f"{key} = {getattr(profile, key):.1f}")
        for key in ("launch_latency_us", "sync_latency_us"):
            lines.append(f"{key} = {getattr(profile, key):.2f}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
