"""What else could predict SmolLM2's active neurons: measurements behind issue 4's note.

At recall 0.95 on held-out tokens of a profile's training shards (FFN inputs and active
masks), per layer, the predicted sparsity of:

  rank-64 MLP, h      the trainer's predictor (predictor_trainer.fit_predictor, 4 epochs) on
                      the profile's criterion: a neuron is active iff |silu(g.x) (u.x)| > t
  rank-64 MLP, gate   the same predictor on CATS's criterion, |silu(g.x)| > t at the same
                      sparsity: one projection instead of a product, is it easier to predict?
  {3,4}-bit copy      no training: the score |silu(g'.x) (u'.x)| from gate and up rows
                      quantized to 3 or 4 bits (symmetric, one fp16 scale per 32 weights)
  exact               the score from the exact rows (the ceiling: the true sparsity)

and each layer's spread of per-neuron firing rates (a skewed spread would let a per-neuron
prior help; a flat one cannot).

    .venv/bin/python benchmarks/predictor_alternatives.py --profile out/smollm2-wikitext/profile
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from thermocline.models import build_model, load_checkpoint
from thermocline.predictor_trainer.config import TrainConfig
from thermocline.predictor_trainer.fit import LayerData, fit_predictor
from thermocline.profiler.shards import load_layer_data

GROUP = 32  # weights per quantization scale


def quantized(w: torch.Tensor, bits: int) -> torch.Tensor:
    """w with each group of GROUP weights rounded to 2**bits symmetric levels (no zero)."""
    groups = w.reshape(w.shape[0], -1, GROUP)
    top = 2 ** (bits - 1) - 0.5  # levels +-0.5 .. +-top, in units of the group's scale
    scale = groups.abs().amax(-1, keepdim=True) / top
    levels = (torch.floor(groups / scale) + 0.5).clamp(-top, top)
    return (levels * scale).reshape(w.shape)


def sparsity_at_recall(score: torch.Tensor, active: torch.Tensor, recall: float) -> float:
    """Share of (token, neuron) pairs below the largest score cut that keeps `recall`."""
    positives = score[active].sort().values
    cut = positives[positives.numel() - math.ceil(recall * positives.numel())]
    return 1 - float((score >= cut).float().mean())


def trained(x: torch.Tensor, active: torch.Tensor, recall: float) -> float:
    config = TrainConfig(recall=recall)
    predictor = fit_predictor(LayerData.split(x, active, config.holdout, "cpu"), 64, config, 4)
    return predictor.metrics["predicted_sparsity"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True, help="a profile folder with training shards")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layers", default="0,5,15,29")
    parser.add_argument("--tokens", type=int, default=30_000, help="per layer, from the shards")
    parser.add_argument("--recall", type=float, default=0.95)
    args = parser.parse_args()
    model = build_model(load_checkpoint(args.model))
    print(f"predicted sparsity at recall {args.recall}, held-out tokens; firing rate quantiles")
    print("| layer | rank-64 MLP, h | rank-64 MLP, gate | 3-bit copy | 4-bit copy | exact "
          "| neuron firing rate, 5/50/95% |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---|")
    for layer in (int(i) for i in args.layers.split(",")):
        x, active = load_layer_data(args.profile, layer, args.tokens)
        x = x.float()
        ffn = model.layers[layer].ffn
        gate_w, up_w = ffn.gate.weight.float(), ffn.up.weight.float()
        with torch.no_grad():  # CATS's criterion, with as many active pairs as the profile's
            gate = F.silu(x @ gate_w.T).abs()
            share = float(active.float().mean())
            gate_active = gate > gate.flatten().kthvalue(round((1 - share) * gate.numel())).values
        held = slice(len(x) - round(len(x) * TrainConfig().holdout), None)  # as LayerData splits
        row = [trained(x, active, args.recall), trained(x, gate_active, args.recall)]
        with torch.no_grad():
            for bits in (3, 4, None):
                g, u = (w if bits is None else quantized(w, bits) for w in (gate_w, up_w))
                score = (F.silu(x[held] @ g.T) * (x[held] @ u.T)).abs()
                row.append(sparsity_at_recall(score, active[held], args.recall))
        rates = active.float().mean(0).quantile(torch.tensor([0.05, 0.5, 0.95]))
        cells = " | ".join(f"{v:.3f}" for v in row)
        print(f"| {layer} | {cells} | {' / '.join(f'{r:.2f}' for r in rates.tolist())} |")


if __name__ == "__main__":
    main()
