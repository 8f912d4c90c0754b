"""Training one layer: planted rules, the rank search, threshold tuning."""

from __future__ import annotations

import math

import pytest
import torch
from predictor_helpers import planted_layer, tiny_config

from thermocline.errors import ThermoclineError
from thermocline.predictor_trainer.config import TrainConfig
from thermocline.predictor_trainer.fit import (
    LayerData,
    fit_predictor,
    heldout_metrics,
    tune_threshold,
    weighted_bce,
    weighted_bce_grad,
)
from thermocline.predictor_trainer.rank_search import allowed_ranks, search_rank

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = dict(epochs=20, search_epochs=5, patience=2, batch=256, lr=1e-2, device="cpu")


def layer_data(inner_rank: int, n: int = 4000, d_model: int = 16, d_ff: int = 32) -> LayerData:
    x, mask = planted_layer(n, d_model, d_ff, inner_rank, seed=0)
    return LayerData.split(x, mask, 0.25, "cpu")


def test_planted_linear_rule_is_learned_to_high_recall_and_precision():
    data = layer_data(inner_rank=16)
    config = TrainConfig(recall=0.99, **FAST)
    predictor = fit_predictor(data, 32, config, config.epochs)
    m = predictor.metrics
    assert m["recall"] >= 0.99
    # Recall alone is free (predict everything); the rule must be learned: few false positives.
    assert m["precision"] >= 0.8
    assert m["predicted_sparsity"] >= m["true_sparsity"] - 0.1
    assert predictor.w1.dtype == torch.float32 and torch.equal(
        predictor.w1, predictor.w1.half().float()
    )


def test_rank_search_gives_an_easier_layer_a_smaller_rank():
    config = TrainConfig(recall=0.95, ranks=(2, 4, 8, 16, 32, 64), tolerance=0.02, **FAST)
    easy, easy_tried = search_rank(layer_data(inner_rank=1), list(config.ranks), config)
    hard, hard_tried = search_rank(layer_data(inner_rank=16), list(config.ranks), config)
    assert easy.rank < hard.rank, (easy_tried, hard_tried)
    assert easy.metrics["recall"] >= 0.95 and hard.metrics["recall"] >= 0.95


def test_weighted_bce_grad_is_the_gradient_of_the_loss():
    logits = torch.randn(64, 24, requires_grad=True)
    target = torch.rand(64, 24) < 0.3
    weighted_bce(logits, target, 0.3).backward()
    torch.testing.assert_close(weighted_bce_grad(logits, target, 0.3), logits.grad)


@pytest.mark.parametrize("recall", [0.5, 0.9, 0.95, 0.99])
def test_threshold_is_the_largest_meeting_the_recall_target(recall):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(500, 40, generator=gen)
    mask = torch.rand(500, 40, generator=gen) < torch.sigmoid(2 * logits)
    logits[:, :3] = 0.5  # ties
    t = tune_threshold(logits, mask, recall)
    assert heldout_metrics(logits, mask, t)["recall"] >= recall
    above = float(torch.nextafter(torch.tensor(t), torch.tensor(math.inf)))
    assert heldout_metrics(logits, mask, above)["recall"] < recall


def test_threshold_without_active_neurons_predicts_nothing():
    logits = torch.randn(10, 8)
    t = tune_threshold(logits, torch.zeros(10, 8, dtype=torch.bool), 0.95)
    assert not (logits > t).any()


def test_byte_budget_caps_the_ladder():
    smollm2 = tiny_config(d_model=576, d_ff=1536)
    assert allowed_ranks(TrainConfig(), smollm2) == [16, 32, 64, 96]
    with pytest.raises(ThermoclineError, match="max-bytes-share"):
        allowed_ranks(TrainConfig(ranks=(256,)), smollm2)


@pytest.mark.parametrize(
    "bad", [dict(recall=1.0), dict(ranks=()), dict(holdout=0), dict(device="tpu"), dict(epochs=0)]
)
def test_bad_config_is_a_clear_error(bad):
    with pytest.raises(ThermoclineError):
        TrainConfig(**bad)
