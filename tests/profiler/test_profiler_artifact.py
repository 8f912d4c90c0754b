"""The profile/ artifact: training shards, atomic writes, no-op reruns, loading errors."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from profiler_helpers import (
    profiled_windows,
    small_config,
    thresholded_model,
    tiny_checkpoint,
)

from thermocline.errors import ThermoclineError
from thermocline.profiler import iter_layer_shards, load_layer_data, load_profile, profile_model
from thermocline.profiler.collect import train_rows
from thermocline.profiler.shards import pack_mask, unpack_mask

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def silu_checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("silu"), "silu")


def test_mask_packing_is_numpy_little_bit_order():
    mask = torch.rand(5, 13) > 0.5
    packed = pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 2)
    for r in range(5):
        for j in range(13):
            assert bool(packed[r, j // 8] >> (j % 8) & 1) == bool(mask[r, j])
    assert torch.equal(unpack_mask(packed, 13), mask)
    assert np.array_equal(packed.numpy(), np.packbits(mask.numpy(), axis=-1, bitorder="little"))


def test_training_shards_read_back_what_was_captured(tmp_path, silu_checkpoint):
    config = small_config(train_tokens=300, shard_tokens=128)
    out = profile_model(str(silu_checkpoint), "wikitext-2", tmp_path / "profile", config)
    meta = load_profile(out).meta
    windows = profiled_windows(silu_checkpoint, config)
    take = train_rows(len(windows), config.seq_len, config.train_tokens)
    assert take.sum() == meta["train_tokens"] == 300
    assert take[0] == 64 and take[-1] == 44  # spread over the corpus: first and last window
    # Capture independently: the thresholded model, window by window.
    model, captured = thresholded_model(silu_checkpoint, out), {}
    for i, block in enumerate(model.layers):
        block.ffn.register_forward_pre_hook(lambda m, a, i=i: captured.__setitem__(("x", i), a[0]))
        block.ffn.down.register_forward_pre_hook(
            lambda m, a, i=i: captured.__setitem__(("h", i), a[0])
        )
    expected = {i: ([], []) for i in range(2)}
    with torch.inference_mode():
        for window, n in zip(windows, take.tolist(), strict=True):
            if n:
                model(window[None])
                for i in range(2):
                    expected[i][0].append(captured["x", i][0, :n].half())
                    expected[i][1].append(captured["h", i][0, :n] != 0)
    assert meta["shards"] == [f"shard_{k:05d}.safetensors" for k in range(3)]
    for i in range(2):
        inputs, mask = load_layer_data(out, i)
        assert inputs.dtype == torch.float16 and inputs.shape == (300, 64)
        assert mask.dtype == torch.bool and mask.shape == (300, 96)
        assert torch.equal(inputs, torch.cat(expected[i][0]))
        assert torch.equal(mask, torch.cat(expected[i][1]))
        assert [len(x) for x, _ in iter_layer_shards(out, i)] == [128, 128, 44]
        assert len(load_layer_data(out, i, max_tokens=200)[0]) == 200


def test_rerun_is_a_noop_unless_forced_or_changed(tmp_path, silu_checkpoint, capsys):
    config = small_config(tokens=256, train_tokens=64)
    out = profile_model(str(silu_checkpoint), "wikitext-2", tmp_path / "profile", config)
    stamp = (out / "profile.json").stat().st_mtime_ns
    config.progress = True
    profile_model(str(silu_checkpoint), "wikitext-2", out, config)
    assert "up to date" in capsys.readouterr().err
    assert (out / "profile.json").stat().st_mtime_ns == stamp
    config.force = True
    profile_model(str(silu_checkpoint), "wikitext-2", out, config)
    assert (out / "profile.json").stat().st_mtime_ns != stamp
    changed = small_config(tokens=256, train_tokens=64, target_sparsity=0.7)
    assert (
        load_profile(profile_model(str(silu_checkpoint), "wikitext-2", out, changed)).meta[
            "target_sparsity"
        ]
        == 0.7
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["profile"]  # no temp folders left


def test_never_replaces_a_folder_that_is_not_a_profile(tmp_path, silu_checkpoint):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ThermoclineError, match="not a profile"):
        profile_model(str(silu_checkpoint), "wikitext-2", out, small_config(tokens=128))
    assert (out / "notes.txt").exists()


def test_failed_run_leaves_nothing(tmp_path, silu_checkpoint, monkeypatch):
    def disk_full(*args):
        raise OSError("disk full")

    monkeypatch.setattr("thermocline.profiler.shards._write_shard", disk_full)
    with pytest.raises(OSError, match="disk full"):
        profile_model(str(silu_checkpoint), "wikitext-2", tmp_path / "profile", small_config())
    assert list(tmp_path.iterdir()) == []


def test_killed_run_leaves_no_artifact(tmp_path, silu_checkpoint):
    out = tmp_path / "profile"
    script = (
        "import torch; torch.set_num_threads(1)\n"
        "from thermocline.profiler import ProfileConfig, profile_model\n"
        f"profile_model({str(silu_checkpoint)!r}, 'wikitext-2', {str(out)!r}, ProfileConfig("
        "tokens=100_000, seq_len=64, calib_tokens=256, train_tokens=100_000, shard_tokens=64, progress=False))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".profile.tmp-*/train/shard_*")) and time.monotonic() < deadline:
        assert proc.poll() is None, "the profile ended before it could be killed"
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert not out.exists()
    # The next run removes the dead run's temp folder and writes a whole profile.
    profile_model(str(silu_checkpoint), "wikitext-2", out, small_config(tokens=128, train_tokens=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["profile"]
    assert sorted(p.name for p in out.iterdir()) == [
        "activations.png",
        "activations.safetensors",
        "profile.json",
        "train",
    ]


def test_load_profile_errors(tmp_path, silu_checkpoint):
    with pytest.raises(ThermoclineError, match="not a profile"):
        load_profile(tmp_path)
    (tmp_path / "profile.json").write_text("{oops")
    with pytest.raises(ThermoclineError, match="corrupt"):
        load_profile(tmp_path)
    out = profile_model(
        str(silu_checkpoint), "wikitext-2", tmp_path / "p", small_config(tokens=128)
    )
    profile = load_profile(out)
    assert profile.tokens == 128 and len(profile.counts) == len(profile.thresholds) == 2
    assert all(0 <= float(f.max()) <= 1 for f in profile.frequencies)
    (out / "activations.safetensors").unlink()
    with pytest.raises(ThermoclineError, match="incomplete or corrupt"):
        load_profile(out)
    meta = json.loads((out / "profile.json").read_text())
    (out / "profile.json").write_text(json.dumps({**meta, "version": 9}))
    with pytest.raises(ThermoclineError, match="version 9"):
        load_profile(out)
    assert os.path.exists(out / "activations.png")
