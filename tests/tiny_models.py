"""Tiny random HF checkpoints of every supported architecture, and their transformers twins.

Each builder saves a real HF directory (config.json, safetensors, tokenizer.json) so the
tests go through the same loaders as users, and returns the transformers model as reference.
Activations transformers lacks (fatrelu, drelu) are patched into the reference's MLPs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from thermocline.converter import LayerFFN, NeuronBlock
from thermocline.converter.reader import Predictor

VOCAB = 260  # 256 byte tokens + specials
BOS, EOS = 256, 257
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def byte_tokenizer() -> Tokenizer:
    """Byte-level tokenizer: one token per byte, so any text round-trips."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab, [], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<s>", "</s>"])
    return tok


def _llama_like(activation: str, kind: str, **overrides):
    hf_act = {"fatrelu": "relu", "drelu": "relu"}.get(activation, activation)
    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        hidden_act=hf_act,
        bos_token_id=BOS,
        eos_token_id=EOS,
        rope_theta=10000.0,
        tie_word_embeddings=False,
    )
    common.update(overrides)
    classes = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "mistral": (MistralConfig, MistralForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    }
    config_cls, model_cls = classes[kind]
    return model_cls(config_cls(**common))


class FATReLU(torch.nn.Module):
    """ProSparse's activation: values at or below the threshold become zero."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (x > self.threshold)


def _patch_activation(model, activation: str, threshold: float) -> None:
    """Give the transformers reference the activations it lacks."""
    for layer in model.model.layers:
        mlp = layer.mlp
        if activation == "fatrelu":
            mlp.act_fn = FATReLU(threshold)
        elif activation == "drelu":
            mlp.forward = lambda x, mlp=mlp: mlp.down_proj(
                torch.relu(mlp.gate_proj(x)) * torch.relu(mlp.up_proj(x))
            )


def _randomize(model, seed: int) -> None:
    """Larger-than-default random weights so activations and norms are non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.08 * torch.randn(p.shape, generator=gen))


def save_tiny(model, path: Path, config_edits: dict | None = None) -> Path:
    model.save_pretrained(path, safe_serialization=True)
    byte_tokenizer().save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": CHAT_TEMPLATE, "bos_token": "<s>", "eos_token": "</s>"})
    )
    if config_edits:
        cfg = json.loads((path / "config.json").read_text())
        cfg.update(config_edits)
        (path / "config.json").write_text(json.dumps(cfg))
    return path


def tiny_llama(
    path: Path, activation: str = "silu", kind: str = "llama", seed: int = 0, **overrides
):
    """(checkpoint dir, transformers reference) for a tiny LLaMA-family model."""
    torch.manual_seed(seed)
    model = _llama_like(activation, kind, **overrides).eval()
    _randomize(model, seed)
    threshold = 0.05
    edits = None
    if activation == "fatrelu":
        edits = {"hidden_act": "fatrelu", "hidden_act_param": threshold}
    elif activation == "drelu":
        edits = {"hidden_act": "drelu"}
    save_tiny(model, path, edits)
    _patch_activation(model, activation, threshold)
    return path, model


def tiny_opt(path: Path, post_norm: bool = False, seed: int = 0):
    """(checkpoint dir, transformers reference) for a tiny OPT (post_norm: OPT-350m's layout)."""
    torch.manual_seed(seed)
    config = OPTConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        ffn_dim=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        do_layer_norm_before=not post_norm,
        word_embed_proj_dim=48 if post_norm else 64,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=1,
    )
    model = OPTForCausalLM(config).eval()
    _randomize(model, seed)
    save_tiny(model, path)
    return path, model


def split_layers(
    model, hot_fraction: float, threshold: float, seed: int = 0, predictor_rank: int = 0
) -> list[LayerFFN]:
    """A dense model's FFNs in the artifact's layout: a random hot/cold split; with
    predictor_rank, random predictors of that rank (about half of the neurons predicted active)."""
    gen = torch.Generator().manual_seed(seed)
    layers = []
    for block in model.layers:
        ffn = block.ffn
        perm = torch.randperm(model.cfg.d_ff, generator=gen)
        n_hot = round(hot_fraction * model.cfg.d_ff)

        def neurons(ids, ffn=ffn):
            return NeuronBlock(
                None if ffn.gate is None else ffn.gate.weight[ids].contiguous(),
                ffn.up.weight[ids].contiguous(),
                ffn.down.weight[:, ids].T.contiguous(),
                None if ffn.up.bias is None else ffn.up.bias[ids].contiguous(),
            )

        down_bias = None if ffn.down.bias is None else ffn.down.bias
        predictor = None
        if predictor_rank:  # fp16 values in fp32 tensors, as the artifact engine holds them
            w1 = torch.randn(predictor_rank, model.cfg.d_model, generator=gen).half().float()
            w2 = torch.randn(model.cfg.d_ff, predictor_rank, generator=gen).half().float()
            predictor = Predictor(w1, w2, 0.0, "relu")
        layers.append(
            LayerFFN(
                perm, neurons(perm[:n_hot]), neurons(perm[n_hot:]), down_bias, threshold, predictor
            )
        )
    return layers
