"""The whole preparation from one recipe: profile -> train-predictors -> place -> convert.

    python -m thermocline.pipeline configs/pipelines/smollm2-wikitext.toml [--demo] [--force]

Each stage is skipped while its output is newer than its inputs (the recipe and the stage
before); each prints one summary line. `--demo` then generates text from the artifact and
prints dense vs sparse decode speed of the same engine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thermocline.errors import ThermoclineError
from thermocline.predictor_trainer import TrainConfig
from thermocline.profiler import ProfileConfig


@dataclass
class PlacementConfig:
    hardware: str = "cpu-only"  # a preset name or a TOML file under configs/hardware
    vram_budget: str | None = None  # e.g. "4GiB"; None: the hardware's memory less its reserve
    context: int = 2048  # tokens of KV cache the GPU holds
    batch_size: int = 64  # neurons per ILP batch


@dataclass
class Recipe:
    path: Path
    out: Path  # everything this recipe writes goes under here
    model: str = "smollm2-135m"
    corpus: str = "wikitext-2"
    dtype: str = "fp16"  # weights of the artifact
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    predictors: TrainConfig = field(default_factory=TrainConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)

    @property
    def artifact(self) -> Path:
        return self.out / "model.thermo"


def _section(cls: type, values: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ThermoclineError(
            f"{where}: unknown keys {', '.join(sorted(unknown))}; known: {', '.join(sorted(names))}"
        )
    if "ranks" in values:
        values = {**values, "ranks": tuple(values["ranks"])}
    return cls(**values)


def load_recipe(path: Path) -> Recipe:
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ThermoclineError(f"cannot read recipe {path}: {error}") from error
    top = data.get("pipeline", {})
    sections = {"profile": ProfileConfig, "predictors": TrainConfig, "placement": PlacementConfig}
    unknown = set(data) - {"pipeline", *sections}
    if unknown:
        raise ThermoclineError(f"{path}: unknown sections {', '.join(sorted(unknown))}")
    parts = {
        name: _section(cls, data.get(name, {}), f"{path} [{name}]")
        for name, cls in sections.items()
    }
    known = {"out", "model", "corpus", "dtype"}
    if set(top) - known:
        raise ThermoclineError(
            f"{path} [pipeline]: unknown keys {', '.join(sorted(set(top) - known))}"
        )
    out = Path(top.get("out", Path("out") / Path(path).stem))
    return Recipe(path=Path(path), **{**top, "out": out}, **parts)


def _stale(output: Path, inputs: list[Path]) -> bool:
    if not output.exists():
        return True
    newest = max(p.stat().st_mtime for p in inputs if p.exists())
    return output.stat().st_mtime < newest


def _stage(
    name: str,
    output: Path,
    inputs: list[Path],
    force: bool,
    run: Callable[[], None],
    summary: Callable[[], str],
) -> None:
    start = time.perf_counter()
    if force or _stale(output, inputs):
        run()
        took = f"{time.perf_counter() - start:6.1f} s"
    else:
        took = "  (up to date)"
    print(f"{name:17s} {took}  {summary()}", flush=True)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def prep(recipe: Recipe, force: bool = False) -> Path:
    """Run the stages whose outputs are missing or older than their inputs; the artifact's path."""
    from thermocline.converter import convert
    from thermocline.placement_solver.hardware import load_hardware
    from thermocline.placement_solver.inputs import load_predictor_ranks
    from thermocline.placement_solver.inputs import load_profile as load_activation_profile
    from thermocline.placement_solver.placement import load_placement, save_placement
    from thermocline.placement_solver.planner import place
    from thermocline.placement_solver.units import parse_size
    from thermocline.predictor_trainer import train_predictors
    from thermocline.profiler import profile_model

    recipe.out.mkdir(parents=True, exist_ok=True)
    profile_dir, predictors_dir = recipe.out / "profile", recipe.out / "predictors"
    placement_path = recipe.out / "placement.json"

    def profile_summary() -> str:
        meta = _json(profile_dir / "profile.json")
        layers = meta["layers"]
        sparsity = sum(layer["sparsity"] for layer in layers) / len(layers)
        top20 = sum(layer["top20_share"] for layer in layers) / len(layers)
        return f"{meta['tokens']} tokens, mean sparsity {sparsity:.1%}, top-20% neurons cover {top20:.1%}"

    _stage(
        "profile",
        profile_dir / "profile.json",
        [recipe.path],
        force,
        lambda: profile_model(
            recipe.model,
            recipe.corpus,
            profile_dir,
            dataclasses.replace(recipe.profile, force=True),
        ),
        profile_summary,
    )

    def predictors_summary() -> str:
        meta = _json(predictors_dir / "predictors.json")
        layers = meta["layers"]
        recall = sum(layer["recall"] for layer in layers) / len(layers)
        sparsity = sum(layer["predicted_sparsity"] for layer in layers) / len(layers)
        return (
            f"recall {recall:.3f}, predicted sparsity {sparsity:.1%}, "
            f"{meta['bytes'] / meta['ffn_bytes']:.1%} of FFN bytes, ranks {sorted({layer['rank'] for layer in layers})}"
        )

    _stage(
        "train-predictors",
        predictors_dir / "predictors.json",
        [recipe.path, profile_dir / "profile.json"],
        force,
        lambda: train_predictors(profile_dir, predictors_dir, recipe.predictors),
        predictors_summary,
    )

    def run_place() -> None:
        activations = load_activation_profile(profile_dir)
        budget = recipe.placement.vram_budget
        placement = place(
            activations,
            load_hardware(recipe.placement.hardware),
            vram_budget=parse_size(budget) if budget is not None else None,
            dtype=recipe.dtype,
            context=recipe.placement.context,
            predictor_ranks=load_predictor_ranks(predictors_dir, activations),
            batch_size=recipe.placement.batch_size,
        )
        save_placement(placement, placement_path)

    def place_summary() -> str:
        placement = load_placement(placement_path)
        summary = placement.summary
        return (
            f"{recipe.placement.hardware}, budget {recipe.placement.vram_budget}: "
            f"{summary['hot_neurons']} hot neurons, {placement.total_gpu_share:.1%} of activations "
            f"on the GPU, {placement.solver.status}"
        )

    _stage(
        "place",
        placement_path,
        [recipe.path, profile_dir / "profile.json", predictors_dir / "predictors.json"],
        force,
        run_place,
        place_summary,
    )

    def artifact_summary() -> str:
        return (
            f"{recipe.artifact} ({recipe.artifact.stat().st_size / 2**20:.0f} MiB, {recipe.dtype})"
        )

    _stage(
        "convert",
        recipe.artifact,
        [
            recipe.path,
            placement_path,
            predictors_dir / "predictors.json",
            profile_dir / "profile.json",
        ],
        force,
        lambda: convert(
            recipe.model, recipe.artifact, placement_path, predictors_dir, profile_dir, recipe.dtype
        ),
        artifact_summary,
    )
    return recipe.artifact


def demo(artifact: Path, prompt: str = "The capital of France is", new_tokens: int = 48) -> None:
    """Generate from the artifact, then dense vs sparse decode speed of the same engine."""
    from thermocline.runtime.bench_commands import format_table, run_bench
    from thermocline.runtime.engine import load_model
    from thermocline.runtime.generate import SamplingParams, stream_text

    loaded = load_model(artifact)
    print(f"\n[{loaded.mode}] {prompt}", end="", flush=True)
    for piece in stream_text(
        loaded.model, loaded.tokenizer, loaded.tokenizer.encode(prompt), SamplingParams(new_tokens)
    ):
        print(piece, end="", flush=True)
    print("\n")
    print(format_table(run_bench(str(artifact), "fp32", 64, llamacpp=False)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m thermocline.pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", type=Path, help="a TOML recipe under configs/pipelines/")
    parser.add_argument(
        "--demo", action="store_true", help="then generate and compare dense vs sparse speed"
    )
    parser.add_argument("--force", action="store_true", help="redo every stage")
    args = parser.parse_args(argv)
    try:
        artifact = prep(load_recipe(args.recipe), args.force)
        if args.demo:
            demo(artifact)
    except ThermoclineError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
