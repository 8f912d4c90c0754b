"""HF checkpoint directories: config.json, safetensors shards, tokenizer.json."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from tokenizers import Tokenizer
from torch import Tensor

from thermocline.errors import ThermoclineError
from thermocline.models.checkpoint import Checkpoint, file_digest
from thermocline.models.config import ModelConfig, RopeScaling
from thermocline.models.tokenizer import TextTokenizer

LLAMA_TYPES = ("llama", "mistral", "qwen2")
HF_ACTIVATIONS = {
    "silu": "silu",
    "swish": "silu",
    "relu": "relu",
    "fatrelu": "fatrelu",
    "drelu": "drelu",
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
}

# HF tensor name -> canonical name; {i} is the layer. q/k/v are fused into attn.wqkv.
LLAMA_NAMES = {
    "model.embed_tokens.weight": "embed.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "lm_head.weight",
    "model.layers.{i}.input_layernorm.weight": "layers.{i}.attn_norm.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "layers.{i}.ffn_norm.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "layers.{i}.attn.wo.weight",
    "model.layers.{i}.self_attn.o_proj.bias": "layers.{i}.attn.wo.bias",
    "model.layers.{i}.mlp.gate_proj.weight": "layers.{i}.ffn.gate.weight",
    "model.layers.{i}.mlp.up_proj.weight": "layers.{i}.ffn.up.weight",
    "model.layers.{i}.mlp.down_proj.weight": "layers.{i}.ffn.down.weight",
    "model.layers.{i}.mlp.up_proj.bias": "layers.{i}.ffn.up.bias",
    "model.layers.{i}.mlp.down_proj.bias": "layers.{i}.ffn.down.bias",
}
OPT_NAMES = {
    "model.decoder.embed_tokens.weight": "embed.weight",
    "model.decoder.embed_positions.weight": "pos_embed.weight",
    "model.decoder.project_in.weight": "project_in.weight",
    "model.decoder.project_out.weight": "project_out.weight",
    "model.decoder.final_layer_norm.weight": "norm.weight",
    "model.decoder.final_layer_norm.bias": "norm.bias",
    "lm_head.weight": "lm_head.weight",
    **{
        f"model.decoder.layers.{{i}}.{hf}.{kind}": f"layers.{{i}}.{ours}.{kind}"
        for hf, ours in [
            ("self_attn_layer_norm", "attn_norm"),
            ("final_layer_norm", "ffn_norm"),
            ("self_attn.out_proj", "attn.wo"),
            ("fc1", "ffn.up"),
            ("fc2", "ffn.down"),
        ]
        for kind in ("weight", "bias")
    },
}
QKV = re.compile(r"(?:model\.(?:decoder\.)?)?layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)")
LAYER = re.compile(r"\.(\d+)\.")


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    model_type = hf.get("model_type")
    common = dict(
        vocab_size=hf["vocab_size"],
        d_model=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"],
        max_seq_len=hf.get("max_position_embeddings", 2048),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_ids=_as_list(hf.get("eos_token_id")),
        tie_embeddings=hf.get("tie_word_embeddings", model_type == "opt"),
    )
    if model_type == "opt":
        if hf.get("activation_function", "relu") != "relu":
            raise ThermoclineError(
                f"OPT with {hf['activation_function']} is not supported (relu only)"
            )
        bias = hf.get("enable_bias", True)
        return ModelConfig(
            arch="opt",
            n_kv_heads=hf["num_attention_heads"],
            d_ff=hf["ffn_dim"],
            activation="relu",
            norm_eps=1e-5,
            qkv_bias=bias,
            o_bias=bias,
            mlp_bias=bias,
            norm_before=hf.get("do_layer_norm_before", True),
            embed_dim=hf.get("word_embed_proj_dim") or hf["hidden_size"],
            **common,
        )
    if model_type not in LLAMA_TYPES:
        raise ThermoclineError(
            f"unknown architecture {model_type!r}; supported: {', '.join((*LLAMA_TYPES, 'opt'))}"
        )
    act = hf.get("hidden_act", "silu")
    if act not in HF_ACTIVATIONS:
        raise ThermoclineError(
            f"unsupported FFN activation {act!r}; supported: {', '.join(HF_ACTIVATIONS)}"
        )
    attention_bias = hf.get("attention_bias", False)
    return ModelConfig(
        arch="llama",
        n_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        d_ff=hf["intermediate_size"],
        activation=HF_ACTIVATIONS[act],
        activation_threshold=hf.get("hidden_act_param", 0.0) if act == "fatrelu" else 0.0,
        head_dim=hf.get("head_dim") or 0,
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=_rope_parameters(hf)["rope_theta"],
        rope_scaling=_rope_scaling(hf),
        qkv_bias=attention_bias or model_type == "qwen2",
        o_bias=attention_bias,
        mlp_bias=hf.get("mlp_bias", False),
        **common,
    )


def _as_list(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _rope_parameters(hf: dict[str, Any]) -> dict[str, Any]:
    """transformers 5 writes `rope_parameters` (with rope_theta inside); 4.x `rope_scaling`."""
    return {
        "rope_theta": hf.get("rope_theta", 10000.0),
        **(hf.get("rope_scaling") or {}),
        **(hf.get("rope_parameters") or {}),
    }


def _rope_scaling(hf: dict[str, Any]) -> RopeScaling | None:
    scaling = _rope_parameters(hf)
    if "rope_type" not in scaling and "type" not in scaling:
        return None
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "default":
        return None
    keys = {
        "factor": "factor",
        "original_max_position_embeddings": "original_max_position",
        "low_freq_factor": "low_freq_factor",
        "high_freq_factor": "high_freq_factor",
        "beta_fast": "beta_fast",
        "beta_slow": "beta_slow",
        "attention_factor": "attention_factor",
    }
    fields = {ours: scaling[theirs] for theirs, ours in keys.items() if theirs in scaling}
    if kind == "yarn" and "original_max_position" not in fields:
        fields["original_max_position"] = hf.get("max_position_embeddings", 2048)
    return RopeScaling(kind=kind, **fields)


def _tensor_stream(
    shards: list[Path], config: ModelConfig, dtype: torch.dtype | None
) -> Iterator[tuple[str, Tensor]]:
    """Canonical tensors, one at a time; a layer's q, k, v are fused once all three are read."""
    names = OPT_NAMES if config.arch == "opt" else LLAMA_NAMES
    table = {}
    for hf_name, ours in names.items():
        for prefix in ("", "model."):  # some OPT checkpoints drop the "model." prefix
            table[hf_name.removeprefix(prefix) if prefix else hf_name] = ours
    pending: dict[tuple[int, str], dict[str, Tensor]] = {}
    for shard in shards:
        with safe_open(shard, framework="pt") as f:
            for hf_name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                tensor = f.get_tensor(hf_name).to(dtype or torch.float32)
                qkv = QKV.fullmatch(hf_name)
                if qkv:
                    layer, part, kind = int(qkv[1]), qkv[2], qkv[3]
                    parts = pending.setdefault((layer, kind), {})
                    parts[part] = tensor
                    if len(parts) == 3:
                        del pending[(layer, kind)]
                        yield (
                            f"layers.{layer}.attn.wqkv.{kind}",
                            torch.cat([parts[p] for p in "qkv"]),
                        )
                    continue
                layer = LAYER.search(hf_name)
                key = LAYER.sub(".{i}.", hf_name, count=1) if layer else hf_name
                if key not in table:
                    if hf_name.endswith("rotary_emb.inv_freq"):
                        continue  # a computed buffer some old checkpoints saved
                    raise ThermoclineError(f"{shard}: unexpected tensor {hf_name}")
                yield table[key].replace("{i}", layer[1] if layer else ""), tensor
    if pending:
        raise ThermoclineError(
            f"incomplete q/k/v projections for layers {sorted(k[0] for k in pending)}"
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ThermoclineError(f"cannot read {path}: {error}") from error


def load_tokenizer_dir(path: Path, config: ModelConfig) -> TextTokenizer:
    tok_file = path / "tokenizer.json"
    if not tok_file.exists():
        raise ThermoclineError(f"{path} has no tokenizer.json")
    tokenizer = Tokenizer.from_file(str(tok_file))
    extra = (
        _read_json(path / "tokenizer_config.json")
        if (path / "tokenizer_config.json").exists()
        else {}
    )
    template = extra.get("chat_template")
    if template is None and (path / "chat_template.jinja").exists():
        template = (path / "chat_template.jinja").read_text()

    def token_text(value: Any) -> str:
        return value.get("content", "") if isinstance(value, dict) else value or ""

    eos_ids = list(config.eos_token_ids)
    eos_token = token_text(extra.get("eos_token"))
    if eos_token and tokenizer.token_to_id(eos_token) is not None and not eos_ids:
        eos_ids = [tokenizer.token_to_id(eos_token)]
    return TextTokenizer(
        tokenizer, template, eos_ids, token_text(extra.get("bos_token")), eos_token
    )


def load_hf_dir(path: Path, name: str) -> Checkpoint:
    if not (path / "config.json").exists():
        raise ThermoclineError(f"{path} is not an HF checkpoint: no config.json")
    config = config_from_hf(_read_json(path / "config.json"))
    shards = sorted(path.glob("*.safetensors"))
    if not shards:
        raise ThermoclineError(
            f"{path} holds no .safetensors weights (pickled .bin files are not read)"
        )
    try:
        with safe_open(shards[0], framework="pt") as f:
            first = next(iter(f.keys()))
            source_dtype = str(f.get_slice(first).get_dtype())
    except SafetensorError as error:
        raise ThermoclineError(f"{shards[0]}: not a valid safetensors file ({error})") from error
    return Checkpoint(
        name=name,
        path=path,
        format="hf",
        config=config,
        tokenizer=load_tokenizer_dir(path, config),
        tensors=lambda dtype=None: _tensor_stream(shards, config, dtype),
        digest=file_digest([path / "config.json", *shards]),
        source_dtype=source_dtype,
    )
