"""What else could predict SmolLM2's active neurons: measurements behind issue 4's note.

At recall 0.95 on held-out tokens of a profile's training shards (FFN inputs and active
masks), per layer, the predicted sparsity of:

  rank-64 MLP, h      the trainer's predictor (predictor_trainer.fit_predictor, 4 epochs) on
                      the profile's criterion: a neuron is active iff |silu(g.x) (u.x)| > t
  rank-64 MLP, gate   the same predictor on CATS's criterion, |silu(g.x)| > t at the same
                      sparsity: one projection instead of a product, is it easier to predict?
  N-bit copy          no training: the score |silu(g'.x) (u'.x)| from gate and up rows
                      quantized to N bits (--bits; symmetric, one fp16 scale per 32 weights)
  4-bit gate copy     within a 10% byte budget: the gate rows alone at 4 bits (9.4% of the
                      fp16 FFN bytes), each neuron's |u.x| taken as its mean on the
                      training tokens: |silu(g'.x)| mean|u.x|
  exact               the score from the exact rows (the ceiling: the true sparsity)

and each layer's spread of per-neuron firing rates (a skewed spread would let a per-neuron
prior help; a flat one cannot). With --perplexity-tokens N, also the perplexity on the first
N tokens of WikiText-2's eval split with the profile's thresholds and every layer's neurons
masked by: nothing more, the trained predictors (--predictors), or the quantized copies
with a per-layer score cut tuned for the recall on the held-out tokens.

    .venv/bin/python benchmarks/predictor_alternatives.py --profile out/smollm2-wikitext/profile \
        [--predictors out/smollm2-wikitext/predictors --perplexity-tokens 16384]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from thermocline.models import build_model, load_checkpoint
from thermocline.predictor_trainer.config import TrainConfig
from thermocline.predictor_trainer.fit import (
    LayerData,
    fit_predictor,
    heldout_metrics,
    tune_threshold,
)
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
    """Share of (token, neuron) pairs below the largest cut that keeps `recall`, scored as the
    trainer scores its logits."""
    return heldout_metrics(score, active, tune_threshold(score, active, recall))[
        "predicted_sparsity"
    ]


def held_out(x: torch.Tensor, active: torch.Tensor) -> LayerData:
    """The trainer's split of one layer's tokens: its held-out slice is what is scored here."""
    return LayerData.split(x, active, TrainConfig().holdout, "cpu")


@dataclass
class QuantizedCopy:
    """The predictor PredictedFFN calls: neurons whose |silu(g'.x) (u'.x)| exceeds the cut."""

    gate: torch.Tensor
    up: torch.Tensor
    cut: float = 0.0

    @classmethod
    def of(cls, ffn, bits: int) -> QuantizedCopy:
        return cls(*(quantized(w.float(), bits) for w in (ffn.gate.weight, ffn.up.weight)))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return (F.silu(x @ self.gate.T) * (x @ self.up.T)).abs()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x) > self.cut


@dataclass
class GateCopy:
    """|silu(g'.x)| times the neuron's mean |u.x|: the quantized copy without the up rows."""

    gate: torch.Tensor
    up_mean: torch.Tensor

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x.float() @ self.gate.T).abs() * self.up_mean


def trained(x: torch.Tensor, active: torch.Tensor, recall: float) -> float:
    config = TrainConfig(recall=recall)
    predictor = fit_predictor(held_out(x, active), 64, config, 4)
    return predictor.metrics["predicted_sparsity"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True, help="a profile folder with training shards")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layers", default="0,5,15,29")
    parser.add_argument("--tokens", type=int, default=30_000, help="per layer, from the shards")
    parser.add_argument("--recall", type=float, default=0.95)
    parser.add_argument("--bits", default="3,4", help="widths of the quantized copies")
    parser.add_argument("--predictors", help="the trained predictors, for the perplexity rows")
    parser.add_argument("--perplexity-tokens", type=int, default=0, help="0: no perplexity")
    args = parser.parse_args()
    args.bits = [int(b) for b in args.bits.split(",")]
    model = build_model(load_checkpoint(args.model))
    print(f"predicted sparsity at recall {args.recall}, held-out tokens; firing rate quantiles")
    copy_columns = "".join(f" {b}-bit copy |" for b in args.bits)
    print(f"| layer | rank-64 MLP, h | rank-64 MLP, gate |{copy_columns} 4-bit gate copy "
          "| exact | neuron firing rate, 5/50/95% |")  # fmt: skip
    print("|---:|---:|---:|" + "---:|" * len(args.bits) + "---:|---:|---|")
    for layer in (int(i) for i in args.layers.split(",")):
        x, active = load_layer_data(args.profile, layer, args.tokens)
        x = x.float()
        ffn = model.layers[layer].ffn
        gate_w, up_w = ffn.gate.weight.float(), ffn.up.weight.float()
        with torch.no_grad():  # CATS's criterion, with as many active pairs as the profile's
            gate = F.silu(x @ gate_w.T).abs()
            share = float(active.float().mean())
            gate_active = gate > gate.flatten().kthvalue(round((1 - share) * gate.numel())).values
        row = [trained(x, active, args.recall), trained(x, gate_active, args.recall)]
        data = held_out(x, active)
        with torch.no_grad():
            copies = [QuantizedCopy.of(ffn, bits) for bits in args.bits]
            copies.append(GateCopy(quantized(gate_w, 4), (data.train_x @ up_w.T).abs().mean(0)))
            for copy in [*copies, QuantizedCopy(gate_w, up_w)]:  # the exact rows last
                row.append(sparsity_at_recall(copy.score(data.held_x), data.held_y, args.recall))
        rates = active.float().mean(0).quantile(torch.tensor([0.05, 0.5, 0.95]))
        cells = " | ".join(f"{v:.3f}" for v in row)
        print(f"| {layer} | {cells} | {' / '.join(f'{r:.2f}' for r in rates.tolist())} |")

    if args.perplexity_tokens:
        compare_perplexity(model, args)


@torch.no_grad()
def compare_perplexity(model, args: argparse.Namespace) -> None:
    from thermocline.corpus import read_text
    from thermocline.predictor_trainer import predicted_masks_from
    from thermocline.predictor_trainer.evaluate import MaskStats, PredictedFFN
    from thermocline.profiler import apply_thresholds
    from thermocline.runtime.perplexity import perplexity

    tokenizer = load_checkpoint(args.model).tokenizer
    ids = tokenizer.encode(read_text("wikitext-2", "eval"))[: args.perplexity_tokens]
    dense = perplexity(model, ids).perplexity
    apply_thresholds(model, args.profile)
    print(f"\nperplexity, first {len(ids)} eval tokens; recall target {args.recall}")
    print("| masks | perplexity | vs dense | realized sparsity | recall |")
    print("|---|---:|---:|---:|---:|")
    print(f"| none (dense model) | {dense:.3f} | | | |")
    thresholded = perplexity(model, ids).perplexity
    print(f"| thresholds alone | {thresholded:.3f} | {thresholded / dense - 1:+.1%} | | |")
    runs = []
    if args.predictors:
        runs.append(("trained predictors (--predictors)", None))
    runs += [(f"{bits}-bit copy", bits) for bits in args.bits]
    for name, bits in runs:
        if bits is None:
            with predicted_masks_from(model, args.predictors, args.profile) as stats:
                ppl = perplexity(model, ids).perplexity
        else:
            n = model.cfg.n_layers
            stats, saved = MaskStats(*([0] * n for _ in range(4))), [b.ffn for b in model.layers]
            for i, block in enumerate(model.layers):
                copy = QuantizedCopy.of(block.ffn, bits)
                data = held_out(*load_layer_data(args.profile, i, args.tokens))
                copy.cut = tune_threshold(copy.score(data.held_x), data.held_y, args.recall)
                block.ffn = PredictedFFN(block.ffn, copy, stats, i)
            try:
                ppl = perplexity(model, ids).perplexity
            finally:
                for block, ffn in zip(model.layers, saved, strict=True):
                    block.ffn = ffn
        t = stats.total()
        print(f"| {name} | {ppl:.3f} | {ppl / dense - 1:+.1%} | {t['realized_sparsity']:.3f} | "
              f"{t['recall']:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
