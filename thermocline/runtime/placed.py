"""The artifact engine's dense tensors on the GPU where placement.json put them.

The placement (placement_solver/residents.py) gives the GPU, in priority order: the norms, the
predictors, attention with its KV cache for a prefix of layers, then lm_head. A layer whose
attention is resident runs its whole block there, in the artifact's dtype: norms, attention,
KV cache, predictor and residual stream; its FFN hands the hidden state to the CPU for the cold
neurons and adds their part to the hot neurons' there (SparseFeedForward). Norms and predictors go with their layer:
on a layer whose attention stays on the CPU the hidden state is already there, and a GPU copy
of them would only add a hand-off. Embeddings stay on the CPU (a row lookup).

Forward hooks move the hidden state where each part runs (`route`, also what the hybrid
benchmark's engines use), so the model's forward and its callers are unchanged;
`Transformer.new_cache` puts each layer's KV cache with its attention.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from thermocline.errors import ThermoclineError
from thermocline.models.transformer import Block, Place, Transformer

_ATTENTION = re.compile(r"layers\.(\d+)\.attention")
# Where the other blocks run: fp32 activations, whatever the weights (runtime/half_weights.py).
CPU = Place(torch.device("cpu"), torch.float32)


@dataclass(frozen=True)
class GpuResidents:
    """What placement.json's `gpu_residents` put on the GPU, as the runtime honours it."""

    layers: int  # layers [0, layers) run on the GPU
    lm_head: bool  # the final norm and lm_head too

    @classmethod
    def parse(cls, names: list[str], n_layers: int) -> GpuResidents:
        attention = sorted(int(m[1]) for n in names if (m := _ATTENTION.fullmatch(n)))
        if attention != list(range(len(attention))) or len(attention) > n_layers:
            raise ThermoclineError(
                f"the placement puts attention of layers {attention} on the GPU; the runtime "
                f"runs a prefix of the {n_layers} layers there: re-run `thermocline place`"
            )
        return cls(len(attention), "lm_head" in names)


class _ToPlace:
    """Forward pre-hook of a block: its hidden state to the block's place, and its RoPE rows
    from tables kept there in its dtype (made once per place, not copied each token)."""

    def __init__(self, place: Place, tables: tuple[Tensor, Tensor] | None):
        self.place, self.tables = place, tables

    def __call__(self, block: Block, args: tuple) -> tuple:
        x, start, rope, cache = args
        x = x.to(*self.place)
        if rope is not None:
            rope = tuple(t[start : start + x.shape[1]] for t in self.tables)
        return x, start, rope, cache


def _move(module: nn.Module, place: Place) -> None:
    """The module's parameters to the place, as new tensors (not copied into: an artifact's
    weights are memory-mapped and read-only)."""
    for sub in module.modules():
        for name, p in list(sub.named_parameters(recurse=False)):
            setattr(sub, name, nn.Parameter(p.detach().to(*place), requires_grad=False))


def _place_block(block: Block, place: Place) -> None:
    for part in (block.attn_norm, block.attn, block.ffn_norm):
        _move(part, place)
    ffn = block.ffn
    if getattr(ffn, "predictor", None) is not None:  # the artifact's, with its weights
        ffn.predictor = dataclasses.replace(
            ffn.predictor,
            w1=ffn.predictor.w1.to(*place),
            w2=ffn.predictor.w2.to(*place),
        )


def _place_head(model: Transformer, place: Place) -> None:
    """The final norm and lm_head (its own copy, when tied to the CPU embedding) to the place."""
    if model.lm_head.weight is model.embed.weight:  # untie: moving it must not move the embedding
        model.lm_head.weight = nn.Parameter(model.embed.weight.detach(), False)
    for part in (model.norm, getattr(model, "project_out", None), model.lm_head):
        if part is not None:
            _move(part, place)


def route(model: Transformer, places: list[Place], head: Place) -> Transformer:
    """Forward hooks that run each block in its place and the head (final norm, lm_head) in
    its own, whatever moved the weights there: the hidden state follows (from wherever the
    embedding gives it), and the logits come back to the CPU in fp32 for sampling and the
    loss. Every block is hooked: a moved tensor that is already in place costs nothing."""
    tables = {}
    for place in dict.fromkeys(places):
        if hasattr(model, "rope_cos"):  # from the fp32 tables, not through a 16-bit state
            tables[place] = tuple(t.to(*place) for t in (model.rope_cos, model.rope_sin))
    for block, place in zip(model.layers, places, strict=True):
        block.register_forward_pre_hook(_ToPlace(place, tables.get(place)))
    model.norm.register_forward_pre_hook(lambda m, args: (args[0].to(*head),))
    if head != CPU:
        model.lm_head.register_forward_hook(lambda m, args, out: out.to(*CPU))
    return model


def place_residents(model: Transformer, residents: GpuResidents, place: Place) -> Transformer:
    """In place, on an assembled artifact model still all on the CPU (before half_weights)."""
    if residents == GpuResidents(0, lm_head=False):  # no hooks: the fused CPU step can run
        return model
    for block in model.layers[: residents.layers]:
        _place_block(block, place)
    if residents.lm_head:
        _place_head(model, place)
    places = [place if i < residents.layers else CPU for i in range(len(model.layers))]
    return route(model, places, place if residents.lm_head else CPU)
