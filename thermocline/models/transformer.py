"""The dense transformer: LLaMA family and OPT in one compact module (gpt-fast style).

Parameter names here are the project's canonical tensor names: loaders map checkpoints onto
them and the converter writes them. The FFN is its own module so the runtime can swap a
neuron-sparse one in, and so the profiler can hook the activation fed to the down projection
(the input of `ffn.down`).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thermocline.models.config import ModelConfig
from thermocline.models.rope import rope_tables


def ffn_activation(cfg: ModelConfig, gate: Tensor | None, up: Tensor) -> Tensor:
    """The activation fed to the down projection, before any sparsity threshold."""
    act = cfg.activation
    if gate is None:  # OPT: relu(fc1 x)
        return F.relu(up)
    if act == "silu":
        return F.silu(gate) * up
    if act == "relu":
        return F.relu(gate) * up
    if act == "fatrelu":
        return gate * (gate > cfg.activation_threshold) * up
    if act == "drelu":
        return F.relu(gate) * F.relu(up)
    if act == "gelu":
        return F.gelu(gate) * up
    return F.gelu(gate, approximate="tanh") * up  # gelu_tanh


class FeedForward(nn.Module):
    """One FFN layer. Neuron j = row j of gate/up (or fc1) and column j of down."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.gate = nn.Linear(cfg.d_model, cfg.d_ff, bias=False) if cfg.gated else None
        self.up = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.mlp_bias)  # fc1 for OPT
        self.down = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.mlp_bias)
        # Magnitude threshold that makes silu/gelu sparse; 0 keeps the model exact (dense).
        # A float, not a tensor: testing a tensor costs an op per layer and token.
        self.threshold = 0.0

    def activation(self, x: Tensor) -> Tensor:
        h = ffn_activation(self.cfg, self.gate(x) if self.gate is not None else None, self.up(x))
        if self.threshold > 0:
            h = h * (h.abs() > self.threshold)
        return h

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.activation(x))


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.arch == "opt":
        return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
    return nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)


class Place(NamedTuple):
    """Where part of a model runs: the device, and the dtype of its activations there."""

    device: torch.device
    dtype: torch.dtype


class KVCache:
    """Preallocated keys and values, each layer's [batch, kv_heads, max_len, head_dim] in the
    place its attention runs (default: every layer on the CPU in `dtype`). The layers of one
    place share one [layers, ...] block; with a single place that block is `k` / `v` (the fused
    CPU step writes it by address), else those are None."""

    def __init__(
        self,
        cfg: ModelConfig,
        batch: int,
        max_len: int,
        dtype: torch.dtype = torch.float32,
        places: list[Place] | None = None,
    ):
        places = places or [Place(torch.device("cpu"), dtype)] * cfg.n_layers
        shape = (batch, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.keys: list[Tensor] = [torch.empty(0)] * cfg.n_layers
        self.values: list[Tensor] = [torch.empty(0)] * cfg.n_layers
        for place in dict.fromkeys(places):
            layers = [i for i, p in enumerate(places) if p == place]
            k, v = (torch.zeros(len(layers), *shape, device=place.device, dtype=place.dtype)
                    for _ in "kv")  # fmt: skip
            for j, i in enumerate(layers):
                self.keys[i], self.values[i] = k[j], v[j]
        self.k, self.v = (k, v) if len(set(places)) == 1 else (None, None)
        self.max_len = max_len

    def update(self, layer: int, start: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        end = start + k.shape[2]
        keys, values = self.keys[layer], self.values[layer]
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        return keys[:, :, :end], values[:, :, :end]


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """HF's rotate-half convention (GGUF loaders undo llama.cpp's interleaved Q/K order)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        q_size, kv_size = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        self.split = (q_size + kv_size, kv_size)  # q and k (roped together) | v
        self.wqkv = nn.Linear(cfg.d_model, q_size + 2 * kv_size, bias=cfg.qkv_bias)
        self.wo = nn.Linear(q_size, cfg.d_model, bias=cfg.o_bias)

    def forward(
        self, x: Tensor, start: int, rope: tuple[Tensor, Tensor] | None, cache: KVCache | None
    ) -> Tensor:
        batch, seq, _ = x.shape
        heads, kv_heads, head_dim = self.cfg.n_heads, self.cfg.n_kv_heads, self.cfg.head_dim
        qk, v = self.wqkv(x).split(self.split, dim=-1)
        qk = qk.view(batch, seq, heads + kv_heads, head_dim)
        if rope is not None:  # q and k in one pass: decode is bound by per-op overhead
            qk = apply_rope(qk, *rope)
        q, k = qk.transpose(1, 2).split((heads, kv_heads), dim=1)
        v = v.view(batch, seq, kv_heads, head_dim).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer, start, k, v)
        mask, causal = None, seq > 1
        if seq > 1 and start > 0:  # new tokens attend to the whole cached prefix
            rows = torch.arange(start, start + seq, device=x.device).unsqueeze(1)
            mask, causal = torch.arange(start + seq, device=x.device).unsqueeze(0) <= rows, False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True
        )
        return self.wo(y.transpose(1, 2).reshape(batch, seq, -1))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.norm_before = cfg.norm_before
        self.attn_norm, self.ffn_norm = make_norm(cfg), make_norm(cfg)
        self.attn = Attention(cfg, layer)
        self.ffn = FeedForward(cfg)

    def forward(
        self, x: Tensor, start: int, rope: tuple[Tensor, Tensor] | None, cache: KVCache | None
    ) -> Tensor:
        if self.norm_before:
            h = x + self.attn(self.attn_norm(x), start, rope, cache)
            return h + self.ffn(self.ffn_norm(h))
        h = self.attn_norm(x + self.attn(x, start, rope, cache))  # OPT-350m: post-norm
        return self.ffn_norm(h + self.ffn(h))


class DecodeStep(Protocol):
    """Every block for one token with a KV cache, computing what the blocks would
    (runtime/fused_decode.py), while `covers` holds."""

    def covers(self, model: Transformer) -> bool: ...

    def __call__(self, x: Tensor, start: int, cache: KVCache) -> Tensor: ...


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        if cfg.arch == "opt":
            self.pos_embed = nn.Embedding(cfg.max_seq_len + cfg.pos_offset, cfg.d_model)
        if cfg.embed_dim != cfg.d_model:
            self.project_in = nn.Linear(cfg.embed_dim, cfg.d_model, bias=False)
            self.project_out = nn.Linear(cfg.d_model, cfg.embed_dim, bias=False)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        # OPT's post-norm variant has no final norm.
        self.norm = make_norm(cfg) if cfg.norm_before else nn.Identity()
        self.lm_head = nn.Linear(cfg.embed_dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.fused_decode: DecodeStep | None = None  # installed by the runtime on CPUs
        self.reset_buffers()

    @classmethod
    def empty(cls, cfg: ModelConfig, dtype: torch.dtype = torch.float32) -> Transformer:
        """Uninitialized weights, to be filled from a checkpoint (skips the random init)."""
        with torch.device("meta"):
            model = cls(cfg)
        model.to_empty(device="cpu").to(dtype)
        if cfg.tie_embeddings:  # to_empty gives each module its own storage
            model.lm_head.weight = model.embed.weight
        model.reset_buffers()
        return model.requires_grad_(False).eval()

    def reset_buffers(self) -> None:
        """Computed buffers (RoPE tables, no FFN thresholds); again after a meta-device build."""
        if self.cfg.arch == "llama":
            # [max_seq_len, 1, head_dim]: rows broadcast over the heads of [.., seq, heads, dim]
            cos, sin = rope_tables(self.cfg)
            self.register_buffer("rope_cos", cos.unsqueeze(1), persistent=False)
            self.register_buffer("rope_sin", sin.unsqueeze(1), persistent=False)
        for block in self.layers:
            if isinstance(block.ffn, FeedForward):  # a swapped-in sparse FFN keeps its own
                block.ffn.threshold = 0.0

    def embed_tokens(
        self, tokens: Tensor, start: int
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """Token (and OPT position) embeddings, plus the RoPE rows for these positions."""
        seq = tokens.shape[1]
        if start + seq > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {start + seq} tokens exceeds {self.cfg.max_seq_len}")
        x = self.embed(tokens)
        if self.cfg.embed_dim != self.cfg.d_model:
            x = self.project_in(x)
        if self.cfg.arch == "opt":
            offset = start + self.cfg.pos_offset
            return x + self.pos_embed.weight[offset : offset + seq], None
        cos, sin = self.rope_cos[start : start + seq], self.rope_sin[start : start + seq]
        return x, (cos.to(x.dtype), sin.to(x.dtype))

    def head(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        if self.cfg.embed_dim != self.cfg.d_model:
            x = self.project_out(x)
        return self.lm_head(x)

    def forward(
        self, tokens: Tensor, start: int = 0, cache: KVCache | None = None, last_only: bool = False
    ) -> Tensor:
        """Logits [batch, seq, vocab] for tokens [batch, seq] at positions start..; with
        last_only, [batch, 1, vocab] of the last position: all a prompt needs before the
        first sampled token, without the head's GEMM over every position."""
        x, rope = self.embed_tokens(tokens, start)
        fused = self.fused_decode
        if fused is not None and tokens.numel() == 1 and cache is not None and fused.covers(self):
            x = fused(x, start, cache)
        else:
            for block in self.layers:
                x = block(x, start, rope, cache)
        return self.head(x[:, -1:] if last_only else x)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """A KV cache with each layer's part where that layer runs, in its activation dtype:
        its norms' (fp32 where 16-bit weights run on the CPU, see runtime/half_weights.py)."""
        norms = [b.attn_norm.weight for b in self.layers]
        return KVCache(self.cfg, batch, max_len, places=[Place(w.device, w.dtype) for w in norms])

    def weight_bytes_per_token(self) -> int:
        """Bytes of weights a batch-1 decode step reads: all but the rows of lookup tables."""
        total = sum(p.numel() * p.element_size() for p in self.parameters())
        lookups = [self.embed.weight] if self.lm_head.weight is not self.embed.weight else []
        if self.cfg.arch == "opt":
            lookups.append(self.pos_embed.weight)
        return total - sum((w.shape[0] - 1) * w[0].numel() * w.element_size() for w in lookups)
