"""ModelConfig: the architecture hyper-parameters every stage agrees on."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from thermocline.errors import ThermoclineError

ARCHITECTURES = ("llama", "opt")
# relu family: a neuron is active when its activation is exactly non-zero.
ACTIVATIONS = ("relu", "fatrelu", "drelu", "silu", "gelu", "gelu_tanh")
ZERO_SPARSE_ACTIVATIONS = ("relu", "fatrelu", "drelu")
ROPE_SCALINGS = ("linear", "llama3", "yarn")


@dataclass
class RopeScaling:
    """RoPE frequency scaling as in HF `rope_scaling` (linear, llama3 or yarn)."""

    kind: str
    factor: float = 1.0
    original_max_position: int = 8192  # llama3, yarn: the pre-training context
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    beta_fast: float = 32.0  # yarn
    beta_slow: float = 1.0  # yarn
    attention_factor: float | None = None  # yarn; None = 0.1 * ln(factor) + 1

    def __post_init__(self) -> None:
        if self.kind not in ROPE_SCALINGS:
            raise ThermoclineError(
                f"unsupported rope scaling {self.kind!r}; supported: {', '.join(ROPE_SCALINGS)}"
            )


@dataclass
class ModelConfig:
    arch: str  # "llama" (LLaMA, Mistral, Qwen2, SmolLM2 layouts) or "opt"
    vocab_size: int
    d_model: int  # width of the residual stream
    n_layers: int
    n_heads: int
    n_kv_heads: int  # < n_heads: grouped-query attention
    d_ff: int  # FFN neurons per layer
    activation: str = "silu"  # FFN activation, one of ACTIVATIONS
    activation_threshold: float = 0.0  # fatrelu: gate values at or below it are zeroed
    head_dim: int = 0  # 0: d_model // n_heads
    max_seq_len: int = 2048  # positions the KV cache and position tables hold
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    tie_embeddings: bool = False  # lm_head shares the token embedding
    qkv_bias: bool = False  # Qwen2 and OPT
    o_bias: bool = False  # OPT
    mlp_bias: bool = False  # OPT
    # OPT only
    norm_before: bool = True  # pre-norm (True) or post-norm (OPT-350m)
    embed_dim: int = 0  # 0: d_model; else OPT projects embeddings in and out
    pos_offset: int = 2  # OPT's learned positions start at index 2
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ThermoclineError(
                f"unknown architecture {self.arch!r}; supported: {', '.join(ARCHITECTURES)}"
            )
        if self.activation not in ACTIVATIONS:
            raise ThermoclineError(
                f"unsupported FFN activation {self.activation!r}; supported: {', '.join(ACTIVATIONS)}"
            )
        if self.arch == "opt" and self.activation != "relu":
            raise ThermoclineError(f"OPT models use relu, not {self.activation!r}")
        if isinstance(self.rope_scaling, dict):
            self.rope_scaling = RopeScaling(**self.rope_scaling)
        if self.head_dim == 0:
            self.head_dim = self.d_model // self.n_heads
        if self.embed_dim == 0:
            self.embed_dim = self.d_model
        if self.n_heads % self.n_kv_heads:
            raise ThermoclineError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})"
            )

    @property
    def gated(self) -> bool:
        """LLaMA-style FFN: down(act(gate x) * up x). OPT's is down(relu(fc1 x))."""
        return self.arch == "llama"

    @property
    def zero_sparse(self) -> bool:
        """Activations whose inactive neurons are exact zeros; others need a threshold."""
        return self.activation in ZERO_SPARSE_ACTIVATIONS

    @property
    def ffn_input_rows(self) -> int:
        """Weight rows read per neuron on the input side (gate and up, or fc1)."""
        return 2 if self.gated else 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ThermoclineError(f"unknown model config fields: {', '.join(sorted(unknown))}")
        return cls(**data)
