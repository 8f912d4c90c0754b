"""The whole preparation from a recipe: every stage on a tiny model, and on the real SmolLM2."""

import pytest
from tiny_models import tiny_llama

from thermocline.pipeline import load_recipe, prep
from thermocline.runtime.engine import load_model
from thermocline.runtime.generate import SamplingParams, stream_text

SMALL = """
[profile]
tokens = {tokens}
seq_len = {seq_len}
batch = 4
calib_tokens = {calib}
train_tokens = {train}
shard_tokens = 1024
target_sparsity = 0.5

[predictors]
max_tokens = {train}
ranks = {ranks}
epochs = 2

[placement]
hardware = "rtx4090-i9-13900k"
vram_budget = "{budget}"
context = {context}
"""


def write_recipe(tmp_path, model: str, corpus: str, **sizes) -> str:
    recipe = tmp_path / "recipe.toml"
    header = f'[pipeline]\nmodel = "{model}"\ncorpus = "{corpus}"\ndtype = "fp16"\nout = "{tmp_path / "out"}"\n'
    recipe.write_text(header + SMALL.format(**sizes))
    return recipe


def test_pipeline_on_a_tiny_model(tmp_path, capsys):
    model_dir, _ = tiny_llama(tmp_path / "model")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" = Title = \n" + "the quick brown fox jumps over the lazy dog. " * 400)
    recipe = load_recipe(
        write_recipe(
            tmp_path,
            model_dir,
            corpus,
            tokens=4096,
            seq_len=64,
            calib=1024,
            train=2048,
            budget="256KiB",
            context=128,
            ranks=[4, 8],
        )
    )
    artifact = prep(recipe)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [
        "profile",
        "train-predictors",
        "place",
        "convert",
    ]
    loaded = load_model(artifact)
    assert loaded.mode == "sparse"
    assert list(
        stream_text(
            loaded.model, loaded.tokenizer, loaded.tokenizer.encode("the"), SamplingParams(4)
        )
    )
    prep(recipe)  # nothing changed: every stage is up to date
    assert capsys.readouterr().out.count("(up to date)") == 4


@pytest.mark.slow
def test_pipeline_on_smollm2_says_paris(tmp_path):
    recipe = write_recipe(
        tmp_path,
        "smollm2-135m",
        "wikitext-2",
        tokens=8192,
        seq_len=256,
        calib=4096,
        train=8192,
        budget="128MiB",
        context=2048,
        ranks=[16, 32],
    )
    artifact = prep(load_recipe(recipe))
    loaded = load_model(artifact)
    assert loaded.mode == "sparse"
    tok = loaded.tokenizer
    text = "".join(
        stream_text(loaded.model, tok, tok.encode("The capital of France is"), SamplingParams(20))
    )
    assert "Paris" in text
