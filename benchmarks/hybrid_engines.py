"""The random model, the predictor stand-in and the three engines of hybrid_7b.py.

Every engine decodes with the same call shape: start(max_len) makes a fresh KV cache, then
engine(tokens [1, seq], start) returns the logits [seq, vocab] of those positions.

Hot set of the hybrid: each layer's most active neurons, as many in every layer. The stand-in
gives every layer the same law, so this is what the placement ILP (thermocline.placement_solver)
returns: it maximizes the activation mass on the GPU, a sum over layers of one concave function
of the layer's hot count, which an equal split maximizes; its C_l floor only binds when a layer
gets a handful of neurons. (The solver would also need pulp/highspy, which the GPU image lacks.)
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from thermocline.converter.reader import LayerFFN, NeuronBlock
from thermocline.errors import ThermoclineError
from thermocline.models import KVCache, ModelConfig, Transformer
from thermocline.models.transformer import Place
from thermocline.runtime.bench import (
    decode_bytes_per_token,
    realized_sparsity,
    reset_stats,
    sparse_ffns,
)
from thermocline.runtime.placed import GpuResidents, place_residents, route
from thermocline.runtime.sparse_engine import DENSE_MIN_TOKENS, sparse_transformer
from thermocline.runtime.sparse_ffn import SparseFeedForward

TOP = 0.2  # the skew is stated as the share of activations the top 20% of neurons hold

# ---------------------------------------------------------------------------------------------
# Weights and the stand-in predictor


@dataclass
class RandomModel:
    cfg: ModelConfig
    dense: dict[str, Tensor]  # canonical names of every non-FFN tensor, on the CPU
    ffn: list[NeuronBlock]  # per layer, every neuron; neuron j is the layer's j-th most active

    @property
    def nbytes(self) -> int:
        blocks = [t for b in self.ffn for t in (b.gate, b.up, b.down_t)]
        return nbytes([*self.dense.values(), *blocks])

    def canonical(self) -> dict[str, Tensor]:
        """The state dict of thermocline's dense Transformer (down as a transposed view)."""
        state = dict(self.dense)
        for i, b in enumerate(self.ffn):
            state |= {
                f"layers.{i}.ffn.gate.weight": b.gate,
                f"layers.{i}.ffn.up.weight": b.up,
                f"layers.{i}.ffn.down.weight": b.down_t.t(),
            }
        return state


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def size(b: float | None) -> str:
    if b is None:
        return ""
    return f"{b / 1e9:.2f} GB" if b >= 1e8 else f"{b / 1e6:.2f} MB"


def random_model(cfg: ModelConfig, dtype: torch.dtype, seed: int, device: torch.device):
    """Weights with std 1/sqrt(fan_in) (norms 1), drawn on `device` (fast on a GPU) in chunks
    and copied into CPU tensors: no kaiming init of 7B parameters on the CPU."""
    gen = torch.Generator(device).manual_seed(seed)

    def draw(rows: int, cols: int, std: float) -> Tensor:
        out = torch.empty(rows, cols, dtype=dtype)
        if device.type == "cpu":
            return out.normal_(0, std, generator=gen)
        step = max(1, (64 << 20) // cols)  # 64M values per draw
        for r in range(0, rows, step):
            n = min(step, rows - r)
            chunk = torch.randn(n, cols, generator=gen, device=device, dtype=dtype)
            out[r : r + n].copy_(chunk.mul_(std))
        return out

    d, dff, hd = cfg.d_model, cfg.d_ff, cfg.head_dim
    qkv = (cfg.n_heads + 2 * cfg.n_kv_heads) * hd
    dense = {"embed.weight": draw(cfg.vocab_size, d, 1.0)}
    ffn = []
    for i in range(cfg.n_layers):
        dense[f"layers.{i}.attn_norm.weight"] = torch.ones(d, dtype=dtype)
        dense[f"layers.{i}.ffn_norm.weight"] = torch.ones(d, dtype=dtype)
        dense[f"layers.{i}.attn.wqkv.weight"] = draw(qkv, d, d**-0.5)
        dense[f"layers.{i}.attn.wo.weight"] = draw(d, cfg.n_heads * hd, (cfg.n_heads * hd) ** -0.5)
        ffn.append(
            NeuronBlock(draw(dff, d, d**-0.5), draw(dff, d, d**-0.5), draw(dff, d, dff**-0.5), None)
        )
    dense["norm.weight"] = torch.ones(d, dtype=dtype)
    dense["lm_head.weight"] = draw(cfg.vocab_size, d, d**-0.5)
    return RandomModel(cfg, dense, ffn)


@dataclass
class ActivationLaw:
    """p_j = min(1, s (j + 1)^-a): the probability that neuron j (by rank) is active."""

    probs: Tensor  # float64 [d_ff], descending
    exponent: float

    def share(self, top: float = TOP, neurons: int | None = None) -> float:
        """Activation mass of the first `neurons` (default: the top `top` share of neurons)."""
        k = round(top * len(self.probs)) if neurons is None else neurons
        return float(self.probs[:k].sum() / self.probs.sum())


def calibrate_law(d_ff: int, sparsity: float, top_share: float) -> ActivationLaw:
    """The power law with mean density 1 - sparsity whose top 20% hold `top_share` of the
    activations (the closest reachable when none does: at density 0.5 the top 20% hold <= 40%)."""
    density = 1.0 - sparsity
    w_all = torch.arange(1, d_ff + 1, dtype=torch.float64)

    def law(a: float) -> Tensor:
        w = w_all**-a
        lo, hi = density / float(w.mean()), 1.0 / float(w.min())  # no clipping .. all ones
        for _ in range(100):  # geometric bisection for s: the range spans many decades
            mid = (lo * hi) ** 0.5
            lo, hi = (mid, hi) if float((mid * w).clamp(max=1).mean()) < density else (lo, mid)
        return (hi * w).clamp(max=1)

    if density >= 1.0:
        return ActivationLaw(torch.ones(d_ff, dtype=torch.float64), 0.0)
    lo, hi = 0.0, 8.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ActivationLaw(law(mid), mid).share() < top_share else (lo, mid)
    return ActivationLaw(law(hi), hi)


class StandInPredictor:
    """Active sets drawn neuron by neuron from the law: a pool of sampled masks served in turn,
    so that drawing costs nothing at decode time. Masks are on the CPU, as SparseFeedForward
    wants them."""

    def __init__(self, law: ActivationLaw, pool: int, gen: torch.Generator):
        self.masks = (
            torch.rand(pool, len(law.probs), generator=gen, dtype=torch.float64) < law.probs
        )
        self.next = 0

    def __call__(self, tokens: Tensor) -> Tensor:
        rows = (self.next + torch.arange(tokens.shape[0])) % len(self.masks)
        self.next += tokens.shape[0]
        return self.masks[rows]


# ---------------------------------------------------------------------------------------------
# Engines built from thermocline's Transformer with blocks on different devices


@dataclass
class SplitEngine:
    """Embedding lookups on the CPU, each block and the head where the net's hooks run them
    (thermocline.runtime.placed.route), each layer's KV cache with its block."""

    name: str
    net: Transformer
    gpu_bytes: int  # weight bytes on the GPU side (by the plan: also right in smoke mode)
    notes: str
    cache: KVCache | None = None

    @property
    def sparse_ffns(self) -> list[SparseFeedForward]:
        return sparse_ffns(self.net)

    def start(self, max_len: int) -> None:
        self.cache = self.net.new_cache(1, max_len)

    @torch.inference_mode()
    def __call__(self, tokens: Tensor, start: int) -> Tensor:
        """Logits [seq, vocab] of tokens [1, seq] at positions start.."""
        return self.net(tokens, start, self.cache)[0]

    def weight_bytes_per_token(self) -> float:
        return decode_bytes_per_token(self.net)

    def sparsity(self) -> float | None:
        return realized_sparsity(self.net)

    def reset_stats(self) -> None:
        reset_stats(self.net)


def _rows(block: NeuronBlock, start: int, end: int) -> NeuronBlock:
    return NeuronBlock(block.gate[start:end], block.up[start:end], block.down_t[start:end], None)


def _assemble(net: Transformer, state: dict[str, Tensor]) -> Transformer:
    missing, unexpected = net.load_state_dict(state, strict=False, assign=True)
    assert not missing and not unexpected, (missing, unexpected)
    net.reset_buffers()
    return net.requires_grad_(False).eval()


def build_hybrid(
    model: RandomModel, budget: int, device: torch.device, law: ActivationLaw, seed: int = 0
) -> SplitEngine:
    """The artifact engine's layout: every dense tensor but the embedding on the GPU (as the
    placement puts them when the budget holds them: runtime/placed.py), then hot neurons."""
    cfg, dtype = model.cfg, model.dense["embed.weight"].dtype
    resident = nbytes(v for k, v in model.dense.items() if k != "embed.weight")
    if resident > budget:
        raise ThermoclineError(
            f"the budget ({size(budget)}) does not hold attention, norms and lm_head "
            f"({size(resident)}), which the hybrid keeps on the GPU: raise --budget"
        )
    per_neuron = 3 * cfg.d_model * dtype.itemsize
    n_hot = min(cfg.d_ff, (budget - resident) // (cfg.n_layers * per_neuron))
    layers = [
        LayerFFN(
            torch.arange(cfg.d_ff), _rows(b, 0, n_hot), _rows(b, n_hot, cfg.d_ff), None, 0.0, None
        )
        for b in model.ffn
    ]
    net = sparse_transformer(cfg, model.dense, layers, use_predictors=False, hot_device=device)
    place_residents(net, GpuResidents(cfg.n_layers, lm_head=True), Place(device, dtype))
    gen = torch.Generator().manual_seed(seed + 1)
    for block in net.layers:
        block.ffn.predictor = StandInPredictor(law, 64, gen)
    notes = (
        f"{n_hot} hot neurons/layer ({n_hot / cfg.d_ff:.1%}), serving "
        f"{law.share(neurons=n_hot):.0%} of the active ones"
    )
    return SplitEngine("hybrid", net, resident + n_hot * per_neuron * cfg.n_layers, notes)


def build_layerwise(
    model: RandomModel, budget: int, device: torch.device, cpu_mode: str = "engine"
) -> SplitEngine:
    from thermocline.runtime.kernels.cpu_sparse import CpuSparseFFN

    cfg, dense = model.cfg, model.dense
    dtype = dense["embed.weight"].dtype
    layer_keys = [
        [f"layers.{i}.{k}.weight" for k in ("attn_norm", "ffn_norm", "attn.wqkv", "attn.wo")]
        for i in range(cfg.n_layers)
    ]
    sizes = [
        nbytes([*(dense[k] for k in keys), b.gate, b.up, b.down_t])
        for keys, b in zip(layer_keys, model.ffn, strict=True)
    ]
    on_gpu, used = 0, 0
    while on_gpu < cfg.n_layers and used + sizes[on_gpu] <= budget:
        used, on_gpu = used + sizes[on_gpu], on_gpu + 1
    head_bytes = nbytes((dense["norm.weight"], dense["lm_head.weight"]))
    head_on_gpu = on_gpu == cfg.n_layers and used + head_bytes <= budget  # -ngl: output last
    gpu = Place(device, dtype)
    cpu = Place(torch.device("cpu"), torch.float32 if cpu_mode == "engine" else dtype)
    places = [gpu if i < on_gpu else cpu for i in range(cfg.n_layers)]
    head = gpu if head_on_gpu else cpu

    with torch.device("meta"):
        net = Transformer(cfg)
    state = {"embed.weight": dense["embed.weight"]}
    state |= {k: dense[k].to(*head) for k in ("norm.weight", "lm_head.weight")}
    for i, (keys, place, b) in enumerate(zip(layer_keys, places, model.ffn, strict=True)):
        state |= {k: dense[k].to(*place) for k in keys}
        if i >= on_gpu and cpu_mode == "engine":  # the engine's dense mode: every neuron
            executor = CpuSparseFFN(b.gate, b.up, b.down_t, cfg.activation)
            net.layers[i].ffn = SparseFeedForward(
                cfg, _rows(b, 0, 0), b, 0.0, None, 0, None, executor, None, "cpu",
                DENSE_MIN_TOKENS[b.up.dtype],
            )  # fmt: skip
            continue
        state |= {
            f"layers.{i}.ffn.gate.weight": b.gate.to(*place),
            f"layers.{i}.ffn.up.weight": b.up.to(*place),
            f"layers.{i}.ffn.down.weight": b.down_t.to(*place).t().contiguous(),
        }
    notes = f"{on_gpu}/{cfg.n_layers} layers on the GPU, lm_head on the "
    notes += "GPU" if head_on_gpu else "CPU"
    if cpu_mode == "torch":
        notes += "; CPU layers: plain torch blocks"
    net = route(_assemble(net, state), places, head)
    return SplitEngine("layer-wise", net, used + head_on_gpu * head_bytes, notes)


def dense_reference(model: RandomModel) -> Transformer:
    """thermocline's plain dense Transformer on the CPU: what every engine must reproduce."""
    with torch.device("meta"):
        net = Transformer(model.cfg)
    return _assemble(net, model.canonical())


# ---------------------------------------------------------------------------------------------
# transformers + accelerate


def hf_state(model: RandomModel) -> dict[str, Tensor]:
    cfg, dense = model.cfg, model.dense
    q_size, kv_size = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    state = {
        "model.embed_tokens.weight": dense["embed.weight"],
        "model.norm.weight": dense["norm.weight"],
        "lm_head.weight": dense["lm_head.weight"],
    }
    for i, b in enumerate(model.ffn):
        hf, ours = f"model.layers.{i}.", f"layers.{i}."
        q, k, v = dense[ours + "attn.wqkv.weight"].split((q_size, kv_size, kv_size))
        state |= {
            hf + "self_attn.q_proj.weight": q,
            hf + "self_attn.k_proj.weight": k,
            hf + "self_attn.v_proj.weight": v,
            hf + "self_attn.o_proj.weight": dense[ours + "attn.wo.weight"],
            hf + "input_layernorm.weight": dense[ours + "attn_norm.weight"],
            hf + "post_attention_layernorm.weight": dense[ours + "ffn_norm.weight"],
            hf + "mlp.gate_proj.weight": b.gate,
            hf + "mlp.up_proj.weight": b.up,
            hf + "mlp.down_proj.weight": b.down_t.t().contiguous(),  # offload copies it whole
        }
    return state


@dataclass
class HFEngine:
    name: str
    hf: nn.Module
    gpu_bytes: int
    notes: str
    cache: object = None

    def start(self, max_len: int) -> None:
        from transformers import DynamicCache

        try:
            self.cache = DynamicCache(config=self.hf.config)  # updated in place by each forward
        except TypeError:  # transformers < 4.56
            self.cache = DynamicCache()

    @torch.inference_mode()
    def __call__(self, tokens: Tensor, start: int) -> Tensor:
        assert self.cache.get_seq_length() == start
        # transformers 5.2x renamed past_key_values to cache. The class's signature: accelerate's
        # hooks wrap the instance's forward in (*args, **kwargs).
        params = inspect.signature(type(self.hf).forward).parameters
        key = "cache" if "cache" in params else "past_key_values"
        return self.hf(input_ids=tokens, use_cache=True, **{key: self.cache}).logits[0]

    def weight_bytes_per_token(self) -> float | None:
        return None

    def sparsity(self) -> float | None:
        return None

    def reset_stats(self) -> None:
        pass


def build_hf(model: RandomModel, budget: int, device: torch.device) -> HFEngine:
    """LlamaForCausalLM on the same weights; on a GPU dispatched as from_pretrained does for
    device_map="auto", max_memory={0: budget, "cpu": RAM}. Raises ImportError without accelerate."""
    from accelerate import dispatch_model, infer_auto_device_map, init_empty_weights
    from accelerate.utils import get_balanced_memory
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = model.cfg
    config = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        hidden_act="relu",
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=False,
    )
    with init_empty_weights():
        hf = LlamaForCausalLM(config)
    hf.load_state_dict(hf_state(model), strict=True, assign=True)
    hf.requires_grad_(False).eval()
    if device.type != "cuda":
        return HFEngine("transformers", hf, 0, "CPU only (smoke): no offload")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    no_split = list(getattr(hf, "_no_split_modules", None) or ["LlamaDecoderLayer"])
    max_memory = get_balanced_memory(
        hf, max_memory={device.index or 0: budget, "cpu": ram}, no_split_module_classes=no_split
    )
    device_map = infer_auto_device_map(hf, max_memory=max_memory, no_split_module_classes=no_split)
    dispatch_model(hf, device_map, skip_keys=getattr(hf, "_skip_keys_device_placement", None))
    gpu = nbytes(p for p in hf.parameters() if p.device.type == "cuda")
    resident = sum(
        _mapped(device_map, f"model.layers.{i}") not in ("cpu", "disk") for i in range(cfg.n_layers)
    )
    notes = f"accelerate: {resident}/{cfg.n_layers} layers resident, the rest offloaded"
    return HFEngine("transformers", hf, gpu, notes)


def _mapped(device_map: dict, module: str):
    """Where a device_map puts a module: its own entry or its closest listed ancestor's."""
    parts = module.split(".")
    for n in range(len(parts), -1, -1):
        if ".".join(parts[:n]) in device_map:
            return device_map[".".join(parts[:n])]
    return None
