"""Byte sizes: parse what users type ("4GiB", "512MiB", "24GB") and print them back."""

from __future__ import annotations

import re

from thermocline.errors import ThermoclineError

# Decimal and binary units both exist on spec sheets; a bare "G" is ambiguous, so it is refused.
UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Bytes in `text`: a number with an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)."""
    match = _SIZE.match(text)
    if not match:
        raise ThermoclineError(f"cannot read size {text!r}; write it like 4GiB, 512MiB or 24GB")
    number, unit = match.groups()
    unit = unit.lower() or "b"
    if unit not in UNITS:
        raise ThermoclineError(
            f"unknown size unit {match.group(2)!r} in {text!r}; use one of "
            "B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"
        )
    return int(float(number) * UNITS[unit])


def format_size(n_bytes: float) -> str:
    """`n_bytes` in the largest binary unit that keeps the number at least 1 (e.g. 3.50 GiB)."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = UNITS[unit.lower()]
        if abs(n_bytes) >= scale:
            return f"{n_bytes / scale:.2f} {unit}"
    return f"{int(n_bytes)} B"
