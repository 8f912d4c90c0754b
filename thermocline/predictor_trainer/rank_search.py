"""Adaptive predictor size: per layer, grow the rank until predicted sparsity stops improving.

Every rank's threshold is tuned to the same recall target, so predicted sparsity at that
recall is the one quality number to compare. The rule: walk up the ladder, training each rank
for `search_epochs`; stop at the first rank that does not beat the best sparsity so far by
`tolerance`; choose the smallest rank whose sparsity is within `tolerance` of the best seen;
train the chosen one on, up to `epochs` in all. Easy layers (sparse, skewed, low-rank
structure) saturate early and keep small predictors; hard ones climb. Short probes keep the
search cheap (about half the cost of training every rank fully); since larger ranks learn
faster, they err towards larger predictors, never towards one too small for the layer. The
byte budget caps the ladder: a layer's predictor may not exceed `max_bytes_share` of its FFN
weights.
"""

from __future__ import annotations

import math

from thermocline.errors import ThermoclineError
from thermocline.models.config import ModelConfig
from thermocline.predictor_trainer.config import TrainConfig
from thermocline.predictor_trainer.fit import LayerData, Report, fit_predictor
from thermocline.predictor_trainer.model import LayerPredictor


def layer_ffn_bytes(model: ModelConfig) -> int:
    """fp16 bytes of one layer's FFN weights (gate, up, down; or fc1, fc2)."""
    return 2 * (model.ffn_input_rows + 1) * model.d_model * model.d_ff


def allowed_ranks(config: TrainConfig, model: ModelConfig) -> list[int]:
    """The ladder's ranks whose fp16 predictor fits the byte budget of a layer."""
    per_rank = 2 * (model.d_model + model.d_ff)
    cap = config.max_bytes_share * layer_ffn_bytes(model) / per_rank
    ranks = [r for r in config.ranks if r <= cap]
    if not ranks:
        raise ThermoclineError(
            f"no rank in {list(config.ranks)} fits {config.max_bytes_share:.0%} of the FFN bytes "
            f"(at most rank {int(cap)} for d_model {model.d_model}, d_ff {model.d_ff}): "
            "add smaller ranks to --ranks or raise --max-bytes-share"
        )
    return ranks


def search_rank(
    data: LayerData, ranks: list[int], config: TrainConfig, report: Report | None = None
) -> tuple[LayerPredictor, dict[int, float]]:
    """The chosen predictor, and the held-out predicted sparsity of every rank probed."""
    tried: list[LayerPredictor] = []
    for rank in ranks:
        probe = fit_predictor(data, rank, config, config.search_epochs, report)
        best_before = max((p.metrics["predicted_sparsity"] for p in tried), default=-math.inf)
        tried.append(probe)
        if probe.metrics["predicted_sparsity"] < best_before + config.tolerance:
            break
    best = max(p.metrics["predicted_sparsity"] for p in tried)
    chosen = next(p for p in tried if p.metrics["predicted_sparsity"] >= best - config.tolerance)
    sparsity = {p.rank: p.metrics["predicted_sparsity"] for p in tried}
    more = config.epochs - config.search_epochs
    if more > 0:
        chosen = fit_predictor(data, chosen.rank, config, more, report, start=chosen)
    return chosen, sparsity
