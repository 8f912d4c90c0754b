"""Round trips on tiny models of every architecture: the artifact gives back the checkpoint."""

import pytest
import torch
import typer
from converter_helpers import hot_ids, write_placement, write_predictors, write_profile
from safetensors import safe_open
from tiny_models import tiny_llama, tiny_opt
from typer.testing import CliRunner

from thermocline.converter import build_dense_model, convert, read_artifact
from thermocline.converter import commands as converter_commands
from thermocline.converter.layout import canonical_shapes
from thermocline.errors import ThermoclineError
from thermocline.models import build_model, load_checkpoint
from thermocline.models.transformer import Transformer
from thermocline.runtime import commands as runtime_commands

MODELS = {
    "llama-silu": lambda p: tiny_llama(p)[0],
    "llama-relu": lambda p: tiny_llama(p, "relu")[0],
    "llama-fatrelu": lambda p: tiny_llama(p, "fatrelu")[0],
    "llama-drelu": lambda p: tiny_llama(p, "drelu")[0],
    "llama-gelu": lambda p: tiny_llama(p, "gelu")[0],
    "llama-tied": lambda p: tiny_llama(p, tie_word_embeddings=True)[0],
    "mistral": lambda p: tiny_llama(p, kind="mistral")[0],
    "qwen2": lambda p: tiny_llama(p, kind="qwen2")[0],
    "opt": lambda p: tiny_opt(p)[0],
    "opt-post-norm": lambda p: tiny_opt(p, post_norm=True)[0],
    "llama-head-dim": lambda p: tiny_llama(p, head_dim=24)[0],  # != d_model / n_heads
}
TOKENS = torch.randint(0, 256, (2, 11), generator=torch.Generator().manual_seed(0))


def full_inputs(tmp_path, checkpoint, dtype="fp32"):
    n = checkpoint.config.n_layers
    hot = hot_ids(checkpoint)
    return hot, dict(
        placement=write_placement(tmp_path / "placement.json", checkpoint, hot, dtype=dtype),
        predictors=write_predictors(tmp_path / "predictors", checkpoint, [3 + i for i in range(n)]),
        profile=write_profile(tmp_path / "profile", checkpoint, [0.01 * (i + 1) for i in range(n)]),
    )


@pytest.mark.parametrize("arch", list(MODELS))
def test_layout_shapes_are_the_transformers(tmp_path, arch):
    """The layout derives names, shapes and order from the config alone: the model's own."""
    config = load_checkpoint(MODELS[arch](tmp_path / "ckpt")).config
    with torch.device("meta"):
        state = Transformer(config).state_dict()
    if config.tie_embeddings:
        del state["lm_head.weight"]
    assert list(canonical_shapes(config).items()) == [(n, tuple(t.shape)) for n, t in state.items()]


@pytest.mark.parametrize("arch", list(MODELS))
def test_round_trip_is_bit_exact(tmp_path, arch):
    checkpoint = load_checkpoint(MODELS[arch](tmp_path / "ckpt"))
    hot, inputs = full_inputs(tmp_path, checkpoint)
    art = read_artifact(
        convert(str(checkpoint.path), tmp_path / "m.thermo", dtype="fp32", **inputs)
    )

    source = dict(checkpoint.tensors())
    restored = art.dense_state_dict()
    assert restored.keys() == source.keys()
    for name, tensor in source.items():
        assert torch.equal(restored[name], tensor), name

    for i, layer in enumerate(art.layers):
        n_hot = len(hot[i])
        assert layer.perm[:n_hot].tolist() == hot[i].tolist()  # placement order kept
        cold = layer.perm[n_hot:]
        assert torch.equal(cold, cold.sort().values)
        assert (layer.hot.n, layer.cold.n) == (n_hot, checkpoint.config.d_ff - n_hot)
        up = source[f"layers.{i}.ffn.up.weight"]
        assert torch.equal(layer.hot.up, up[layer.perm[:n_hot]])
        down = source[f"layers.{i}.ffn.down.weight"]
        assert torch.equal(layer.cold.down_t, down.t()[cold])
        zero = checkpoint.config.zero_sparse  # the ReLU family needs no threshold
        assert layer.threshold == pytest.approx(0.0 if zero else 0.01 * (i + 1))
        assert layer.predictor.threshold == -0.5 + i and layer.predictor.rank == 3 + i

    with torch.inference_mode():
        assert torch.equal(build_dense_model(art)(TOKENS), build_model(checkpoint)(TOKENS))


def test_predictor_rows_follow_the_neurons(tmp_path):
    checkpoint = load_checkpoint(tiny_llama(tmp_path / "ckpt", "relu")[0])
    _, inputs = full_inputs(tmp_path, checkpoint)
    art = read_artifact(
        convert(str(checkpoint.path), tmp_path / "m.thermo", dtype="fp32", **inputs)
    )
    with safe_open(str(inputs["predictors"] / "predictors.safetensors"), "pt") as f:
        for i, layer in enumerate(art.layers):
            w1, w2 = f.get_tensor(f"layers.{i}.w1").float(), f.get_tensor(f"layers.{i}.w2").float()
            assert torch.equal(layer.predictor.w1, w1)
            assert torch.equal(layer.predictor.w2, w2[layer.perm])
            x = torch.randn(5, checkpoint.config.d_model)
            expected = torch.relu(x @ w1.t()) @ w2.t() > layer.predictor.threshold
            assert torch.equal(layer.predictor.predict(x), expected[:, layer.perm])


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_dense_artifact_loads_with_safetensors(tmp_path, dtype):
    checkpoint = load_checkpoint(tiny_opt(tmp_path / "ckpt")[0])
    out = convert(str(checkpoint.path), tmp_path / "dense.thermo", dtype=dtype)
    art = read_artifact(out)
    torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    assert art.placement is None and art.predictors is None and art.thresholds == [0.0, 0.0]
    for layer in art.layers:
        assert layer.hot.n == 0 and layer.predictor is None
        assert torch.equal(layer.perm, torch.arange(checkpoint.config.d_ff))
    restored = art.dense_state_dict()
    for name, tensor in checkpoint.tensors():
        assert torch.equal(restored[name], tensor.to(torch_dtype)), name
    with safe_open(str(out), "pt") as f:  # a plain safetensors file, readable by anyone
        assert f.metadata()["format"] == "thermocline"
        assert torch.equal(f.get_tensor("layers.1.ffn.cold.up"), art.layers[1].cold.up)
        assert torch.equal(f.get_tensor("embed.weight"), art.dense["embed.weight"])
    model = build_dense_model(art, torch.float32)
    assert model.layers[0].ffn.up.weight.dtype == torch.float32


def test_profile_alone_sets_thresholds(tmp_path):
    checkpoint = load_checkpoint(tiny_llama(tmp_path / "ckpt")[0])
    profile = write_profile(tmp_path / "profile", checkpoint, [0.25, 0.5])
    art = read_artifact(convert(str(checkpoint.path), tmp_path / "m.thermo", profile=profile))
    assert art.thresholds == [0.25, 0.5]
    assert art.sources["profile"]["digest"] and art.sources["model"]["digest"] == checkpoint.digest


@pytest.mark.parametrize("kind", ["placement", "predictors", "profile"])
def test_inputs_of_another_model_are_refused(tmp_path, kind):
    checkpoint = load_checkpoint(tiny_llama(tmp_path / "ckpt")[0])
    writers = {
        "placement": lambda: write_placement(
            tmp_path / "p.json", checkpoint, hot_ids(checkpoint), "f00d" * 16
        ),
        "predictors": lambda: write_predictors(tmp_path / "pred", checkpoint, [2, 2], "f00d" * 16),
        "profile": lambda: write_profile(tmp_path / "prof", checkpoint, [0.0, 0.0], "f00d" * 16),
    }
    out = tmp_path / "m.thermo"
    with pytest.raises(ThermoclineError, match=f"{kind} .*f00df00d.*{checkpoint.digest[:16]}"):
        convert(str(checkpoint.path), out, **{kind: writers[kind]()})
    assert not out.exists()


def test_failed_conversion_leaves_nothing(tmp_path):
    from safetensors.torch import load_file, save_file

    path = tiny_llama(tmp_path / "ckpt")[0]
    weights = load_file(path / "model.safetensors")
    del weights["model.layers.1.mlp.down_proj.weight"]
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    out_dir = tmp_path / "out"
    with pytest.raises(ThermoclineError, match="incomplete FFN weights for layers \\[1\\]"):
        convert(str(path), out_dir / "m.thermo")
    assert list(out_dir.iterdir()) == []  # no artifact, no temporary file


def test_cli_convert_and_inspect(tmp_path):
    checkpoint = load_checkpoint(tiny_llama(tmp_path / "ckpt", "relu")[0])
    _, inputs = full_inputs(tmp_path, checkpoint, "fp16")
    app = typer.Typer()
    converter_commands.register(app)
    runtime_commands.register(app)
    out = tmp_path / "m.thermo"
    args = ["convert", "--model", str(checkpoint.path), "--out", str(out), "--dtype", "fp16"]
    args += [f"--{k}={v}" for k, v in inputs.items()]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and out.exists()
    result = CliRunner().invoke(app, ["inspect", str(out)])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "thermocline artifact v1, fp16" in text and "highs-ilp" in text and "norms" in text
    n_hot = [len(ids) for ids in hot_ids(checkpoint)]
    assert f"hot neurons {sum(n_hot)} of 192" in text
    assert "predictors: relu" in text and "placement" in text and "profile" in text


def test_all_hot_and_all_cold_layers(tmp_path):
    checkpoint = load_checkpoint(tiny_opt(tmp_path / "ckpt")[0])
    d_ff = checkpoint.config.d_ff
    hot = [torch.randperm(d_ff).numpy(), torch.zeros(0, dtype=torch.int64).numpy()]
    placement = write_placement(tmp_path / "placement.json", checkpoint, hot)
    art = read_artifact(
        convert(str(checkpoint.path), tmp_path / "m.thermo", placement, dtype="fp32")
    )
    assert (art.layers[0].hot.n, art.layers[0].cold.n) == (d_ff, 0)
    assert art.layers[0].cold.up.shape == (0, checkpoint.config.d_model)
    assert (art.layers[1].hot.n, art.layers[1].cold.n) == (0, d_ff)
    source = dict(checkpoint.tensors())
    for name, tensor in art.tensors():
        assert torch.equal(tensor, source[name]), name


def test_placement_for_another_dtype_is_refused(tmp_path):
    checkpoint = load_checkpoint(tiny_llama(tmp_path / "ckpt")[0])
    placement = write_placement(tmp_path / "p.json", checkpoint, hot_ids(checkpoint), dtype="fp16")
    with pytest.raises(ThermoclineError, match="solved for fp16 weights.*--dtype fp16"):
        convert(str(checkpoint.path), tmp_path / "m.thermo", placement, dtype="fp32")
