"""Every check on a .thermo file that needs no weight: container, metadata, tensor layout.

Order matters for the messages: the container first, then format and version (a newer
version may digest differently), the header digest, the metadata, and last each tensor
against the layout the config implies, so each kind of damage gets its own message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn.functional as F

from thermocline.converter.format import ST_DTYPES, TensorSpec, check_digest, read_header
from thermocline.converter.layout import FORMAT, SUPPORTED_VERSIONS, plan
from thermocline.errors import ThermoclineError
from thermocline.models.config import ModelConfig
from thermocline.models.tokenizer import TextTokenizer
from thermocline.runtime.engine import parse_dtype

# Predictor nonlinearities by name: a name from the file selects one of these, nothing else.
NONLINEARITIES = {"relu": F.relu, "silu": F.silu, "gelu": F.gelu}


@dataclass
class ValidHeader:
    path: Path
    version: int
    config: ModelConfig
    tokenizer: TextTokenizer
    dtype: str
    thresholds: list[float]
    placement: dict[str, Any] | None
    predictors: dict[str, Any] | None
    sources: dict[str, Any]
    specs: list[TensorSpec]  # the planned layout, checked against the header
    data_start: int  # byte of the file where tensor data begins
    offsets: dict[str, int]  # tensor name -> offset in the data


def _fail(path: Path, message: str) -> ThermoclineError:
    return ThermoclineError(f"{path}: {message}")


def _json(path: Path, meta: dict[str, str], key: str) -> Any:
    try:
        return json.loads(meta[key])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise _fail(path, f"metadata field {key!r} is missing or not JSON; convert again") from None


def _per_layer(path: Path, values: Any, what: str, n_layers: int) -> list:
    if not isinstance(values, list) or len(values) != n_layers:
        raise _fail(path, f"{what} must list {n_layers} layers; convert again")
    return values


def _numbers(path: Path, values: Any, what: str, n_layers: int) -> list[float]:
    values = _per_layer(path, values, what, n_layers)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise _fail(path, f"{what} must be numbers; convert again")
    return [float(v) for v in values]


def _check_data(path: Path, header: dict[str, Any], specs: list, data_len: int) -> dict[str, int]:
    """Each tensor where the plan says, in bounds and back to back; returns name -> offset."""
    found = {name for name in header if name != "__metadata__"}
    wanted = {s.name for s in specs}
    if missing := [s.name for s in specs if s.name not in found]:
        raise _fail(path, f"missing tensor(s) {', '.join(missing[:5])}; convert again")
    if unexpected := sorted(found - wanted):
        raise _fail(path, f"unexpected tensor(s) {', '.join(unexpected[:5])}")
    spans = []
    for spec in specs:
        entry = header[spec.name]
        shape, dtype = tuple(entry.get("shape", ())), entry.get("dtype")
        if shape != spec.shape:
            raise _fail(
                path, f"tensor {spec.name} has shape {shape}, the config implies {spec.shape}"
            )
        if dtype != ST_DTYPES[spec.dtype]:
            raise _fail(path, f"tensor {spec.name} is {dtype}, expected {ST_DTYPES[spec.dtype]}")
        begin, end = entry.get("data_offsets", (None, None))
        if not isinstance(begin, int) or not isinstance(end, int) or end - begin != spec.nbytes:
            raise _fail(
                path, f"tensor {spec.name} has bad data offsets {entry.get('data_offsets')}"
            )
        spans.append((begin, end, spec.name))
    spans.sort()
    total = spans[-1][1] if spans else 0
    if total > data_len:
        raise _fail(
            path,
            f"truncated: the tensors need {total} data bytes, the file holds {data_len}; convert again",
        )
    position = 0
    for begin, end, name in spans:
        if begin != position:
            raise _fail(
                path, f"tensor {name} starts at {begin}, expected {position} (overlap or gap)"
            )
        position = end
    if total != data_len:
        raise _fail(path, f"{data_len - total} unexpected bytes after the last tensor")
    return {name: begin for begin, _, name in spans}


def validate_artifact(path: Path) -> ValidHeader:
    """Check a .thermo file's header and layout; a clear ThermoclineError for any problem."""
    if not path.is_file():
        raise ThermoclineError(f"artifact {path} not found; run `thermocline convert` first")
    header, data_start, data_len = read_header(path)
    meta = header["__metadata__"]
    if meta.get("format") != FORMAT:
        raise _fail(
            path, f"format is {meta.get('format')!r}, not {FORMAT!r}: not a .thermo artifact"
        )
    version = meta.get("version")
    if not str(version).isdigit() or int(version) not in SUPPORTED_VERSIONS:
        supported = ", ".join(map(str, SUPPORTED_VERSIONS))
        raise _fail(
            path,
            f"format version {version!r} is not supported (this thermocline reads {supported}); "
            "convert again with this version",
        )
    check_digest(path, header)
    try:
        config = ModelConfig.from_dict(_json(path, meta, "config"))
        tokenizer = TextTokenizer.from_json(_json(path, meta, "tokenizer"))
        torch_dtype = parse_dtype(meta.get("dtype", ""))
    except ThermoclineError as error:
        raise _fail(path, str(error)) from None
    except Exception as error:  # a malformed config or tokenizer: say which and stop
        raise _fail(path, f"config or tokenizer metadata is malformed ({error})") from None
    n, d_ff = config.n_layers, config.d_ff
    thresholds = _numbers(path, _json(path, meta, "thresholds"), "thresholds", n)
    placement, predictors = _json(path, meta, "placement"), _json(path, meta, "predictors")
    sources = _json(path, meta, "sources")
    for key, value in (("placement", placement), ("predictors", predictors), ("sources", sources)):
        if value is not None and not isinstance(value, dict):
            raise _fail(path, f"metadata field {key!r} must be an object or null; convert again")
    if not isinstance((sources or {}).get("model"), dict):
        raise _fail(path, "metadata field 'sources' names no model; convert again")
    hot_counts = [0] * n
    if placement is not None:
        hot_counts = _per_layer(path, placement.get("hot_counts"), "placement hot_counts", n)
        if any(not isinstance(c, int) or not 0 <= c <= d_ff for c in hot_counts):
            raise _fail(path, f"placement hot_counts must lie in 0..{d_ff}")
    ranks = None
    if predictors is not None:
        layers = _per_layer(path, predictors.get("layers"), "predictors", n)
        if not all(isinstance(layer, dict) for layer in layers):
            raise _fail(path, "predictor layers must be objects; convert again")
        ranks = [int(r) for r in _numbers(path, [la.get("rank") for la in layers], "ranks", n)]
        _numbers(path, [la.get("threshold") for la in layers], "predictor thresholds", n)
        if predictors.get("nonlinearity") not in NONLINEARITIES:
            raise _fail(
                path,
                f"predictor nonlinearity {predictors.get('nonlinearity')!r} is not supported "
                f"({', '.join(NONLINEARITIES)})",
            )
    specs = plan(config, torch_dtype, hot_counts, ranks)
    offsets = _check_data(path, header, specs, data_len)
    return ValidHeader(
        path,
        int(version),
        config,
        tokenizer,
        meta["dtype"],
        thresholds,
        placement,
        predictors,
        sources,
        specs,
        data_start,
        offsets,
    )
