"""The real SmolLM2: a small profile, predictors for all 30 layers, predicted masks in the model."""

from __future__ import annotations

import json

import pytest
import torch

from thermocline.corpus import read_text
from thermocline.predictor_trainer import (
    TrainConfig,
    load_predictors,
    predicted_masks_from,
    train_predictors,
)
from thermocline.profiler import ProfileConfig, profile_model


@pytest.mark.slow
def test_smollm2_predictors_end_to_end(tmp_path, smollm2, smollm2_checkpoint):
    small = ProfileConfig(tokens=2048, train_tokens=2048, calib_tokens=2048, progress=False)
    profile = profile_model("smollm2-135m", "wikitext-2", tmp_path / "profile", small)
    config = TrainConfig(ranks=(16, 32), epochs=2, search_epochs=1, batch=256, threads=1)
    out = train_predictors(profile, tmp_path / "predictors", config, progress=False)
    meta = json.loads((out / "predictors.json").read_text())
    assert meta["model"]["digest"] == smollm2_checkpoint.digest
    assert len(meta["layers"]) == 30 and meta["bytes"] / meta["ffn_bytes"] < 0.1
    assert all(layer["recall"] >= 0.95 for layer in meta["layers"])
    assert all(layer["rank"] in (16, 32) for layer in load_predictors(out).meta["layers"])
    ids = smollm2_checkpoint.tokenizer.encode(read_text("wikitext-2", "eval"))[:256]
    with torch.inference_mode(), predicted_masks_from(smollm2, out) as stats:
        smollm2(torch.tensor([ids]))
    total = stats.total()
    assert 0.45 < total["true_sparsity"] < 0.55  # the profile's 50% thresholds, on new text
    assert total["recall"] > 0.85 and total["realized_sparsity"] > 0.0
    assert all(block.ffn.threshold == 0 for block in smollm2.layers)  # restored
