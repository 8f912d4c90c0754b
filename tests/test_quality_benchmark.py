"""benchmarks/quality.py and benchmarks/plots.py on the outputs of a tiny model's pipeline."""

import json
import math
import sys

import plots
import quality
from tiny_models import tiny_llama

from thermocline.pipeline import load_recipe, prep

RECIPE = """
[pipeline]
model = "{model}"
corpus = "{corpus}"
dtype = "fp16"
out = "{out}"

[profile]
tokens = 4096
seq_len = 64
batch = 4
calib_tokens = 1024
train_tokens = 2048
shard_tokens = 1024
target_sparsity = 0.5

[predictors]
max_tokens = 2048
ranks = [4, 8]
epochs = 2

[placement]
hardware = "rtx4090-i9-13900k"
vram_budget = "256KiB"
context = 128
"""


def test_quality_table_and_plots(tmp_path, monkeypatch, capsys):
    model_dir, _ = tiny_llama(tmp_path / "model")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" = Title = \n" + "the quick brown fox jumps over the lazy dog. " * 400)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE.format(model=model_dir, corpus=corpus, out=tmp_path / "out"))
    prep(load_recipe(recipe))
    results = tmp_path / "results"

    argv = ["quality.py", "--recipe", str(recipe), "--results", str(results), "--window", "64"]
    monkeypatch.setattr(sys, "argv", [*argv, "--max-tokens", "1024", "--threads", "1"])
    quality.main()
    report = json.loads((results / "quality.json").read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert list(rows) == [
        "dense",
        "exact thresholds",
        "predicted masks",
        "artifact (sparse runtime)",
    ]
    assert all(math.isfinite(r["perplexity"]) and r["tokens"] == 16 * 63 for r in rows.values())
    assert report["split"] == "eval" and report["issue7"]["same_predictors"]
    for name in ("exact thresholds", "predicted masks", "artifact (sparse runtime)"):
        assert 0 < rows[name]["sparsity"] < 1 and len(rows[name]["layer_sparsity"]) == 2
    assert rows["artifact (sparse runtime)"]["recall"] is not None
    assert "| dense |" in (results / "quality.md").read_text()
    assert "artifact vs predictors" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", [*argv, "--max-tokens", "1024", "--resume"])
    quality.main()  # every row kept: nothing is measured again
    assert json.loads((results / "quality.json").read_text())["rows"] == report["rows"]

    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps([{"name": "thermocline dense", "dtype": "fp32",
                                  "decode_tokens_per_s": 20.0}]))  # fmt: skip
    argv = ["plots.py", "--recipe", str(recipe), "--quality", str(results / "quality.json")]
    monkeypatch.setattr(sys, "argv", [*argv, "--results", str(results), "--decode", str(bench)])
    plots.main()
    for png in ("predictors.png", "quality.png", "decode.png"):
        assert (results / png).read_bytes()[:4] == b"\x89PNG"
