"""`thermocline inspect model.thermo`: what an artifact holds, after validating it."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from thermocline.converter.reader import NeuronBlock, read_artifact


def _nbytes(tensors: list[Tensor | None]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _block_bytes(block: NeuronBlock) -> int:
    return _nbytes([block.gate, block.up, block.down_t, block.up_bias])


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def describe_artifact(path: str | Path) -> str:
    """Sizes of the hot and cold parts, per-layer hot counts, predictors, thresholds, sources."""
    art = read_artifact(path)
    cfg, d_ff = art.config, art.config.d_ff
    hot = sum(_block_bytes(layer.hot) for layer in art.layers)
    cold = sum(_block_bytes(layer.cold) for layer in art.layers)
    predictors = [layer.predictor for layer in art.layers]
    pred_bytes = sum(_nbytes([p.w1, p.w2]) for p in predictors if p is not None)
    dense = _nbytes(list(art.dense.values())) + _nbytes([la.down_bias for la in art.layers])
    n_hot = sum(layer.hot.n for layer in art.layers)
    lines = [
        f"{art.path}: thermocline artifact v{art.version}, {art.dtype}, "
        f"{_mb(Path(art.path).stat().st_size)}",
        f"  architecture {cfg.arch}, activation {cfg.activation}, layers {cfg.n_layers}, "
        f"d_model {cfg.d_model}, d_ff {d_ff}, vocab {cfg.vocab_size}",
        f"  hot neurons {n_hot} of {cfg.n_layers * d_ff} ({n_hot / (cfg.n_layers * d_ff):.1%}): "
        f"{_mb(hot)};  cold {_mb(cold)} (memory-mapped);  other weights {_mb(dense)};  "
        f"predictors {_mb(pred_bytes) if art.predictors else 'none'}",
    ]
    if art.placement:
        p = art.placement
        lines.append(
            f"  placement: {p.get('hardware')}, budget {_mb(int(p.get('vram_budget_bytes', 0)))}, "
            f"solver {p.get('solver')} ({p.get('status')}), "
            f"GPU residents {', '.join(p.get('gpu_residents', [])) or 'none'}"
        )
    else:
        lines.append("  placement: none (dense artifact: every neuron cold)")
    if art.predictors:
        lines.append(
            f"  predictors: {art.predictors.get('nonlinearity')}, "
            f"recall target {art.predictors.get('recall_target')}"
        )
    lines.append("  layer   hot   cold  threshold  predictor rank  logit thr  recall")
    for i, (layer, pm) in enumerate(
        zip(art.layers, (art.predictors or {}).get("layers", [None] * cfg.n_layers), strict=True)
    ):
        pred = "      -" if pm is None else f"{pm['rank']:>7d}  {pm['threshold']:>9.3f}"
        recall = "" if pm is None or "recall" not in pm else f"  {pm['recall']:.3f}"
        lines.append(
            f"  {i:5d} {layer.hot.n:5d} {layer.cold.n:6d}  {layer.threshold:9.4f}  "
            f"{pred:>14s}{recall}"
        )
    lines.append("  sources:")
    for kind, src in art.sources.items():
        name = src.get("name") or src.get("path", "")
        lines.append(f"    {kind:10s} {name}  digest {str(src.get('digest', ''))[:16]}")
    return "\n".join(lines)
