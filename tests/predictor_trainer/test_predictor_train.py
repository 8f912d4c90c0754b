"""train_predictors end to end on synthetic profiles: the predictors/ contract, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from predictor_helpers import planted_layer, tiny_config, write_profile
from safetensors import safe_open
from typer.testing import CliRunner

from thermocline.errors import ThermoclineError
from thermocline.predictor_trainer import TrainConfig, load_predictors, train_predictors
from thermocline.predictor_trainer.commands import register
from thermocline.predictor_trainer.fit import heldout_metrics
from thermocline.runtime import commands as runtime_commands

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = dict(
    epochs=15,
    search_epochs=6,
    patience=2,
    batch=128,
    lr=1e-2,
    tolerance=0.02,
    max_bytes_share=2.0,
    device="cpu",
    threads=1,
)
N, HOLDOUT = 3000, 0.2


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    """Layer 0 follows a rank-1 rule (easy), layer 1 a full-rank one (hard)."""
    config = tiny_config(n_layers=2, d_model=16, d_ff=32)
    layers = [planted_layer(N, 16, 32, inner_rank=k, seed=k) for k in (1, 16)]
    return write_profile(tmp_path_factory.mktemp("profile"), config, layers, shard_tokens=700)


@pytest.fixture(scope="module")
def trained(profile, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "predictors"
    config = TrainConfig(recall=0.95, ranks=(2, 4, 8, 16, 32), holdout=HOLDOUT, **CONFIG)
    return train_predictors(profile, out, config, progress=False)


def test_writes_the_predictors_contract(trained, profile):
    meta = json.loads((trained / "predictors.json").read_text())
    assert meta["format"] == "thermocline-predictors" and meta["version"] == 1
    assert meta["model"] == {"name": "tiny", "digest": "0" * 64}
    assert meta["profile"] == str(profile.resolve()) and meta["nonlinearity"] == "relu"
    assert meta["recall_target"] == 0.95 and meta["train_seconds"] > 0
    assert meta["ffn_bytes"] == 2 * 3 * 16 * 32 * 2
    layers = meta["layers"]
    assert meta["bytes"] == sum(layer["bytes"] for layer in layers)
    with safe_open(str(trained / "predictors.safetensors"), "pt") as f:
        assert sorted(f.keys()) == ["layers.0.w1", "layers.0.w2", "layers.1.w1", "layers.1.w2"]
        for i, layer in enumerate(layers):
            w1, w2 = f.get_tensor(f"layers.{i}.w1"), f.get_tensor(f"layers.{i}.w2")
            assert w1.dtype == w2.dtype == torch.float16
            assert w1.shape == (layer["rank"], 16) and w2.shape == (32, layer["rank"])
            assert layer["bytes"] == 2 * (w1.numel() + w2.numel())
    for layer in layers:
        assert set(layer) >= {
            "rank",
            "threshold",
            "recall",
            "precision",
            "predicted_sparsity",
            "true_sparsity",
            "bytes",
        }
        assert layer["recall"] >= 0.95
        assert (
            layer["predicted_sparsity"] > 0.3
        )  # the rules are learned, not recall by predicting all
    assert layers[0]["rank"] < layers[1]["rank"]  # the easy layer gets the smaller predictor


def test_loaded_predictors_reproduce_the_heldout_metrics(trained, profile):
    predictors = load_predictors(trained)
    for i, (p, layer) in enumerate(zip(predictors.layers, predictors.meta["layers"], strict=True)):
        x, mask = planted_layer(N, 16, 32, inner_rank=(1, 16)[i], seed=(1, 16)[i])
        held = slice(N - round(N * HOLDOUT), N)
        assert p.w1.dtype == torch.float32 and p.rank == layer["rank"]
        metrics = heldout_metrics(p.logits(x[held]), mask[held], p.threshold)
        assert metrics["recall"] == pytest.approx(layer["recall"], abs=1e-3)
        assert metrics["recall"] >= 0.95 - 1e-3
        assert torch.equal(p.predict(x[held]), p.logits(x[held]) > layer["threshold"])


def test_training_again_replaces_the_folder(trained, profile):
    (trained / "stale.txt").write_text("old")
    config = TrainConfig(**(CONFIG | dict(ranks=(4,), epochs=1, search_epochs=1)))
    train_predictors(profile, trained, config, progress=False)
    assert not (trained / "stale.txt").exists()
    assert [layer["rank"] for layer in load_predictors(trained).meta["layers"]] == [4, 4]
    assert not [p for p in trained.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_load_errors_are_clear(tmp_path, trained):
    with pytest.raises(ThermoclineError, match="train-predictors"):
        load_predictors(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "predictors.json").write_text("{not json")
    (broken / "predictors.safetensors").write_bytes(
        (trained / "predictors.safetensors").read_bytes()
    )
    with pytest.raises(ThermoclineError, match="corrupt"):
        load_predictors(broken)
    meta = json.loads((trained / "predictors.json").read_text())
    meta["layers"][0]["rank"] += 1
    (broken / "predictors.json").write_text(json.dumps(meta))
    with pytest.raises(ThermoclineError, match="layer 0"):
        load_predictors(broken)


def test_missing_profile_is_a_clear_error(tmp_path):
    with pytest.raises(ThermoclineError, match="thermocline profile"):
        train_predictors(tmp_path, tmp_path / "out", TrainConfig(device="cpu"), progress=False)


def app() -> typer.Typer:
    main = typer.Typer()
    register(main)
    runtime_commands.register(main)  # with two or more commands typer keeps the command names
    return main


def test_cli_trains_and_summarizes(profile, tmp_path):
    out = tmp_path / "p"
    args = ["train-predictors", "--profile", str(profile), "--out", str(out), "--ranks", "4,8"]
    args += ["--epochs", "2", "--max-bytes-share", "2", "--device", "cpu", "--recall", "0.9"]
    result = CliRunner().invoke(app(), args)
    assert result.exit_code == 0, result.output
    assert "mean held-out recall" in result.output and "of the FFN bytes" in result.output
    assert load_predictors(out).meta["recall_target"] == 0.9


def test_cli_rejects_bad_ranks(profile, tmp_path):
    result = CliRunner().invoke(
        app(), ["train-predictors", "--profile", str(profile), "--ranks", "8,x"]
    )
    assert isinstance(result.exception, ThermoclineError) and "--ranks" in str(result.exception)
