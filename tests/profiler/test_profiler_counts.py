"""Counts, thresholds and sparsity against brute force on tiny models of every activation."""

import pytest
import torch
from profiler_helpers import (
    profiled_windows,
    small_config,
    thresholded_model,
    tiny_checkpoint,
)
from safetensors.torch import load_file

from thermocline.models import build_model, load_checkpoint
from thermocline.models.transformer import ffn_activation
from thermocline.profiler import load_profile, measure_sparsity, profile_model
from thermocline.profiler.calibrate import calibrate_thresholds
from thermocline.profiler.stats import gini, top_share

pytestmark = pytest.mark.usefixtures("one_thread")


def brute_force_counts(model, windows, thresholds):
    """Per token, from each layer's FFN input: active = h != 0 (ReLU family) or |h| > t."""
    cfg, captured = model.cfg, {}
    hooks = [
        block.ffn.register_forward_pre_hook(lambda m, a, i=i: captured.__setitem__(i, a[0]))
        for i, block in enumerate(model.layers)
    ]
    counts = [torch.zeros(cfg.d_ff, dtype=torch.long) for _ in model.layers]
    with torch.inference_mode():
        for window in windows:
            model(window[None])
            for i, block in enumerate(model.layers):
                x, ffn = captured[i], block.ffn
                h = ffn_activation(cfg, ffn.gate(x) if ffn.gate is not None else None, ffn.up(x))[0]
                for token_h in h:  # one token at a time, on purpose
                    counts[i] += (
                        (token_h != 0) if cfg.zero_sparse else (token_h.abs() > thresholds[i])
                    )
    for hook in hooks:
        hook.remove()
    return counts


@pytest.mark.parametrize("activation", ["relu", "drelu", "fatrelu", "opt", "silu", "gelu"])
def test_counts_equal_brute_force(tmp_path, activation):
    checkpoint = tiny_checkpoint(tmp_path / "model", activation)
    config = small_config(tokens=512, target_sparsity=0.6)
    profile = load_profile(
        profile_model(str(checkpoint), "wikitext-2", tmp_path / "profile", config)
    )
    model = thresholded_model(checkpoint, profile.path)
    expected = brute_force_counts(model, profiled_windows(checkpoint, config), profile.thresholds)
    for ours, theirs in zip(profile.counts, expected, strict=True):
        assert torch.equal(ours, theirs)
    tensors = load_file(str(profile.path / "activations.safetensors"))
    if model.cfg.zero_sparse:  # exact zeros, no threshold, the target ignored
        assert not any(k.endswith(".threshold") for k in tensors)
        assert profile.thresholds == [0.0] * model.cfg.n_layers
        assert profile.meta["target_sparsity"] is None
        assert all(0 < layer["sparsity"] < 1 for layer in profile.meta["layers"])
    else:
        assert all(tensors[f"layers.{i}.threshold"].shape == () for i in range(model.cfg.n_layers))
        assert all(t > 0 for t in profile.thresholds)


@pytest.mark.parametrize(("activation", "target"), [("silu", 0.3), ("gelu", 0.7), ("silu", 0.9)])
def test_threshold_gives_target_sparsity_on_calibration_tokens(tmp_path, activation, target):
    checkpoint = tiny_checkpoint(tmp_path / "model", activation)
    config = small_config(tokens=2048, calib_tokens=2048, batch=4, target_sparsity=target)
    profile = load_profile(
        profile_model(str(checkpoint), "wikitext-2", tmp_path / "profile", config)
    )
    assert profile.meta["calib_tokens"] == profile.tokens == 2048
    values = 2048 * 96  # every |h| of a layer is in the quantile's sample
    for layer in profile.meta["layers"]:
        assert abs(layer["sparsity"] - target) < 0.01
        # Calibration saw the very activations the counting pass sees: exactly k of them <= t.
        assert layer["sparsity"] == pytest.approx(round(target * values) / values, abs=1e-12)
    # The oracle path (thresholds loaded into the model, zeros counted) sees the same sparsity.
    model = thresholded_model(checkpoint, profile.path)
    with torch.inference_mode(), measure_sparsity(model) as meter:
        model(profiled_windows(checkpoint, config))
    assert meter.sparsity == pytest.approx(
        1 - sum(int(c.sum()) for c in profile.counts) / (2048 * 96 * 2)
    )


def test_sampled_quantile_is_within_one_percent(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "model", "silu")
    config = small_config(tokens=2048)
    model = build_model(load_checkpoint(checkpoint))
    windows = profiled_windows(checkpoint, config)
    # 50k of the 2048 x 96 values per layer: the random-subsample path of the calibration.
    thresholds = calibrate_thresholds(model, windows, 0.5, batch=4, max_samples=50_000)
    assert len(thresholds) == 2
    with torch.inference_mode(), measure_sparsity(model) as meter:
        model(windows)
    for sparsity in meter.layer_sparsity:
        assert abs(sparsity - 0.5) < 0.01


def test_skew_statistics():
    uniform = torch.full((100,), 7, dtype=torch.long)
    assert top_share(uniform, 0.1) == pytest.approx(0.1)
    assert gini(uniform) == pytest.approx(0.0, abs=1e-12)
    one_hot = torch.zeros(100, dtype=torch.long)
    one_hot[3] = 50
    assert top_share(one_hot, 0.1) == 1.0
    assert gini(one_hot) == pytest.approx(0.99)
    assert gini(torch.zeros(10, dtype=torch.long)) == 0.0
