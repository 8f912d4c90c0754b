"""PNG plots of the benchmark results, beside them in benchmarks/results/.

    .venv/bin/python benchmarks/plots.py                               # predictors + quality
    .venv/bin/python benchmarks/plots.py --decode bench.json dense.json

- predictors.png: per layer, the predictor's rank and its predicted sparsity against the true
  sparsity (held-out tokens, from predictors.json); with quality.json, also the sparsity the
  masks realized on the eval split.
- quality.png: perplexity on the eval split of each row of quality.json (benchmarks/quality.py).
- decode.png: decode tokens/s of each engine in the given JSON files, the output of
  `thermocline bench MODEL --json > F` or `benchmarks/dense_decode.py --json F`.
A plot whose input is missing is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from thermocline.pipeline import load_recipe  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def plot_predictors(predictors: dict, quality: dict | None, path: Path) -> None:
    layers = predictors["layers"]
    x = range(len(layers))
    fig, (sparsity_ax, rank_ax) = plt.subplots(
        2, 1, figsize=(10, 6), sharex=True, height_ratios=[2, 1], constrained_layout=True
    )
    sparsity_ax.plot(x, [p["true_sparsity"] for p in layers], "k--", label="true (held-out)")
    sparsity_ax.bar(x, [p["predicted_sparsity"] for p in layers], label="predicted (held-out)")
    rows = {r["name"]: r for r in (quality or {}).get("rows", [])}
    if rows.get("predicted masks", {}).get("layer_sparsity"):
        realized = rows["predicted masks"]["layer_sparsity"]
        sparsity_ax.plot(x, realized, "o", color="C1", ms=4, label="realized (eval split)")
    sparsity_ax.set_ylabel("FFN sparsity")
    sparsity_ax.set_ylim(0, 1)
    sparsity_ax.legend(loc="upper right")
    sparsity_ax.set_title(
        f"{predictors['model']['name']} predictors at recall {predictors['recall_target']}"
    )
    rank_ax.bar(x, [p["rank"] for p in layers], color="C2")
    rank_ax.set_ylabel("rank")
    rank_ax.set_xlabel("layer")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_quality(quality: dict, path: Path) -> None:
    rows = quality["rows"]
    dense = rows[0]["perplexity"]
    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    bars = ax.bar([r["name"] for r in rows], [r["perplexity"] for r in rows], color="C0")
    for bar, r in zip(bars, rows, strict=True):
        note = f"{r['perplexity']:.2f}\n{r['perplexity'] / dense - 1:+.1%}"
        if r.get("sparsity") is not None:
            note += f"\nsparsity {r['sparsity']:.0%}"
        ax.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=8)  # fmt: skip
    ax.axhline(dense, color="k", lw=0.8, ls="--")
    ax.set_ylim(0, max(r["perplexity"] for r in rows) * 1.25)
    ax.set_ylabel("perplexity")
    ax.set_title(
        f"{quality['model']}, {quality['corpus']} {quality['split']} split, "
        f"{quality['tokens_scored']:,} tokens"
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_decode(files: list[Path], path: Path) -> None:
    """One horizontal bar per engine and dtype, grouped by file (one run each), top down; a
    whisker spans the rounds of a `bench --rounds` run (the bar is their median)."""
    labels, rates, below, above = [], [], [], []
    for f in files:
        for r in json.loads(f.read_text()):
            labels.append(f"{r['name']} {r['dtype']}" + (f" ({f.stem})" if len(files) > 1 else ""))
            rate = r["decode_tokens_per_s"]
            runs = r.get("decode_runs") or [rate]
            rates.append(rate)
            below.append(rate - min(runs))
            above.append(max(runs) - rate)
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.35 * len(rates)), constrained_layout=True)
    whiskers = [below[::-1], above[::-1]]
    bars = ax.barh(labels[::-1], rates[::-1], xerr=whiskers, color="C0", ecolor="0.4", capsize=2)
    ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    ax.set_xlabel("decode tokens/s (batch 1)")
    ax.tick_params(axis="y", labelsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--recipe",
        type=Path,
        default=Path("configs/pipelines/smollm2-wikitext.toml"),
        help="pipeline recipe whose out folder holds predictors/predictors.json",
    )
    parser.add_argument("--predictors", type=Path, help="a predictors folder, elsewhere")
    parser.add_argument("--quality", type=Path, default=RESULTS / "quality.json")
    parser.add_argument("--decode", type=Path, nargs="*", default=[], help="bench JSON files")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    quality = json.loads(args.quality.read_text()) if args.quality.exists() else None

    predictors = (
        args.predictors or load_recipe(args.recipe).out / "predictors"
    ) / "predictors.json"
    if predictors.exists():
        plot_predictors(
            json.loads(predictors.read_text()), quality, args.results / "predictors.png"
        )
        print(f"wrote {args.results / 'predictors.png'}")
    else:
        print(f"skipped predictors.png: no {predictors}")
    if quality:
        plot_quality(quality, args.results / "quality.png")
        print(f"wrote {args.results / 'quality.png'}")
    else:
        print(f"skipped quality.png: no {args.quality} (run benchmarks/quality.py)")
    if args.decode:
        plot_decode(args.decode, args.results / "decode.png")
        print(f"wrote {args.results / 'decode.png'}")
    else:
        print("skipped decode.png: no --decode JSON given")


if __name__ == "__main__":
    main()
