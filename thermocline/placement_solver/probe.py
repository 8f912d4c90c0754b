"""`thermocline hardware probe`: measure this machine and describe it as a HardwareProfile.

Each figure is the best of a few repetitions (the least disturbed run), bandwidths in GB/s
(1e9 bytes/s) like spec sheets. CPU bandwidth is a multi-threaded reduction over a buffer far
larger than the caches, the access pattern of batch-1 decode; GPU figures use torch.cuda.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from thermocline.placement_solver.hardware import HardwareProfile

GB = 1e9


def _best_seconds(run: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    run()  # warm-up: page faults, allocator, lazy CUDA init
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def _no_sync() -> None:
    return None


def cpu_bandwidth_gbps(buffer_bytes: int = 1 << 30, repeats: int = 5) -> float:
    """Sustained read bandwidth of CPU memory: sum of a float32 buffer on all torch threads."""
    buffer = torch.ones(buffer_bytes // 4, dtype=torch.float32)
    seconds = _best_seconds(lambda: buffer.sum(), repeats, _no_sync)
    return buffer.numel() * 4 / seconds / GB


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gpu_fields(buffer_bytes: int, repeats: int) -> dict[str, object]:
    device = torch.device("cuda")
    sync = torch.cuda.synchronize
    source = torch.ones(buffer_bytes // 4, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    # A device copy reads and writes every byte.
    copy_s = _best_seconds(lambda: target.copy_(source), repeats, sync)
    pinned = torch.empty(buffer_bytes // 4, dtype=torch.float32).pin_memory()
    h2d_s = _best_seconds(lambda: source.copy_(pinned, non_blocking=True), repeats, sync)
    d2h_s = _best_seconds(lambda: pinned.copy_(source, non_blocking=True), repeats, sync)

    tiny = torch.zeros(1, device=device)
    launches = 2000
    # Launch latency: enqueue many tiny kernels, then wait once; the wait is amortized.
    launch_s = _best_seconds(lambda: [tiny.add_(1) for _ in range(launches)], repeats, sync)
    # Sync latency: one tiny kernel and a blocking wait for it, the per-layer hand-off.
    round_trips = []
    for _ in range(200):
        start = time.perf_counter()
        tiny.add_(1)
        sync()
        round_trips.append(time.perf_counter() - start)
    props = torch.cuda.get_device_properties(device)
    return {
        "gpu_name": props.name,
        "gpu_memory_bytes": props.total_memory,
        "gpu_reserved_bytes": min(1 << 30, props.total_memory // 8),
        "gpu_bandwidth_gbps": 2 * buffer_bytes / copy_s / GB,
        "pcie_h2d_gbps": buffer_bytes / h2d_s / GB,
        "pcie_d2h_gbps": buffer_bytes / d2h_s / GB,
        "launch_latency_us": launch_s / launches * 1e6,
        "sync_latency_us": statistics.median(round_trips) * 1e6,
    }


def probe_hardware(
    name: str = "local", buffer_bytes: int = 1 << 30, repeats: int = 5, use_gpu: bool = True
) -> HardwareProfile:
    """Measure this machine; the GPU part only when CUDA is available and `use_gpu`."""
    fields: dict[str, object] = {}
    if use_gpu and torch.cuda.is_available():
        fields = _gpu_fields(buffer_bytes, repeats)
    cpu = cpu_name()
    gpu = fields.get("gpu_name", "")
    return HardwareProfile(
        name=name,
        description=f"measured by thermocline hardware probe: {cpu}" + (f" + {gpu}" if gpu else ""),
        cpu_name=cpu,
        cpu_memory_bytes=cpu_memory_bytes(),
        cpu_bandwidth_gbps=cpu_bandwidth_gbps(buffer_bytes, repeats),
        **fields,  # type: ignore[arg-type]
    )
