"""Predicted masks inside a tiny dense model, and `perplexity --predictors`."""

from __future__ import annotations

import pytest
import torch
import typer
from predictor_helpers import profile_model
from tiny_models import tiny_llama
from typer.testing import CliRunner

from thermocline.errors import ThermoclineError
from thermocline.models import build_model, load_checkpoint
from thermocline.predictor_trainer import (
    LayerPredictor,
    Predictors,
    TrainConfig,
    load_predictors,
    predicted_masks,
    train_predictors,
)
from thermocline.runtime import commands as runtime_commands

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=["silu", "relu"])
def setup(request, tmp_path_factory):
    """A tiny LLaMA, its profile on random tokens (SiLU: thresholds for 50% sparsity), and
    trained predictors."""
    root = tmp_path_factory.mktemp("eval")
    checkpoint, _ = tiny_llama(root / "model", activation=request.param)
    model = build_model(load_checkpoint(checkpoint))
    gen = torch.Generator().manual_seed(0)
    profile = profile_model(model, root / "profile", torch.randint(0, 256, (48, 64), generator=gen))
    config = TrainConfig(
        ranks=(16, 32, 64),
        epochs=10,
        lr=1e-2,
        batch=256,
        max_bytes_share=1.0,
        device="cpu",
        threads=1,
    )
    predictors = train_predictors(profile, root / "predictors", config, progress=False)
    return checkpoint, model, profile, predictors


def thresholds_of(profile) -> list[float]:
    from thermocline.profiler import load_profile

    return load_profile(profile).thresholds


def test_all_active_predictors_give_the_thresholded_model(setup):
    _, model, profile, _ = setup
    cfg, thresholds = model.cfg, thresholds_of(profile)
    everything = LayerPredictor(
        torch.zeros(1, cfg.d_model), torch.zeros(cfg.d_ff, 1), threshold=-1.0
    )
    tokens = torch.randint(0, 256, (2, 32))
    dense = model(tokens)
    with predicted_masks(model, Predictors([everything] * cfg.n_layers, {}), thresholds) as stats:
        masked = model(tokens)
    for block, t in zip(model.layers, thresholds, strict=True):
        block.ffn.threshold = t
    try:
        torch.testing.assert_close(masked, model(tokens))
    finally:
        model.reset_buffers()
    torch.testing.assert_close(model(tokens), dense)  # the context restored the dense model
    total = stats.total()
    assert total["recall"] == 1.0 and total["realized_sparsity"] == 0.0
    assert 0.3 < total["true_sparsity"] < 0.7
    assert stats.pairs == [2 * 32 * cfg.d_ff] * cfg.n_layers


def test_trained_predictors_keep_recall_on_new_tokens(setup):
    _, model, profile, predictors = setup
    tokens = torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(1))
    with predicted_masks(model, load_predictors(predictors), thresholds_of(profile)) as stats:
        model(tokens)
    total = stats.total()
    # ReLU: active iff the gate is positive, a linear rule; SiLU: |h| > t is much harder.
    assert total["recall"] > 0.85
    assert total["realized_sparsity"] > (0.3 if model.cfg.zero_sparse else 0.02)
    assert all(0 <= stats.layer(i)["recall"] <= 1 for i in range(model.cfg.n_layers))


def test_mismatched_predictors_are_a_clear_error(setup):
    _, model, profile, _ = setup
    wrong = LayerPredictor(torch.zeros(4, 8), torch.zeros(model.cfg.d_ff, 4))
    wrong_set = Predictors([wrong] * model.cfg.n_layers, {})
    with (
        pytest.raises(ThermoclineError, match="trained on this model"),
        predicted_masks(model, wrong_set, thresholds_of(profile)),
    ):
        pass


def test_perplexity_command_with_predictors(setup, tmp_path):
    checkpoint, _, profile, predictors = setup
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    app = typer.Typer()
    runtime_commands.register(app)
    base = [
        "perplexity",
        "--model",
        str(checkpoint),
        "--text",
        str(text),
        "--split",
        "all",
        "--window",
        "64",
    ]
    result = CliRunner().invoke(app, [*base, "--predictors", str(predictors)])
    assert result.exit_code == 0, result.output
    assert "realized sparsity" in result.output and "recall" in result.output
    explicit = CliRunner().invoke(
        app, [*base, "--predictors", str(predictors), "--profile", str(profile)]
    )
    assert explicit.output.splitlines()[-1] == result.output.splitlines()[-1]
    alone = CliRunner().invoke(app, [*base, "--profile", str(profile)])
    assert isinstance(alone.exception, ThermoclineError)
