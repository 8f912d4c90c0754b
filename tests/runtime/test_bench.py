"""`thermocline bench` on a tiny artifact: both modes of the engine side by side, and rounds."""

import json

import pytest
import typer
from converter.converter_helpers import tiny_artifact
from typer.testing import CliRunner

from thermocline.errors import ThermoclineError
from thermocline.runtime import bench, bench_commands
from thermocline.runtime.sparse_engine import load_artifact_model

pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args: str):
    app = typer.Typer()
    bench_commands.register(app)
    app.command("unused")(lambda: None)  # two commands: typer then expects the command's name
    return CliRunner().invoke(app, ["bench", *args])


def test_rounds_take_turns_and_report_the_median(tmp_path, monkeypatch):
    rates = iter([30.0, 10.0, 20.0, 10.0, 20.0, 30.0])  # sparse, dense; dense, sparse; ...
    real = bench_commands.bench_model

    def timed(*args):
        row = real(*args)
        row.decode_tokens_per_s = next(rates)
        return row

    monkeypatch.setattr(bench_commands, "bench_model", timed)
    path = tiny_artifact(tmp_path, [])
    result = invoke(str(path), "--dtype", "fp16", "-n", "4", "--rounds", "3", "--json")
    assert result.exit_code == 0, result.output
    sparse, dense = json.loads(result.output)
    assert sparse["name"] == "thermocline sparse" and dense["name"] == "thermocline dense"
    assert sparse["decode_runs"] == [30.0, 10.0, 20.0] and sparse["decode_tokens_per_s"] == 20.0
    assert dense["decode_runs"] == [10.0, 20.0, 30.0] and dense["decode_tokens_per_s"] == 20.0
    assert 0 < sparse["sparsity"] < 1 and dense["sparsity"] is None
    assert 0 < sparse["recall"] <= 1 and dense["recall"] is None
    # measured in both modes; SiLU with no thresholds (no profile): no h is zero
    assert sparse["true_sparsity"] == dense["true_sparsity"] == 0.0


def test_table_shows_the_range_and_bad_arguments_are_refused(tmp_path):
    path = tiny_artifact(tmp_path, [])
    result = invoke(str(path), "--dtype", "fp16", "-n", "2", "--rounds", "2")
    assert result.exit_code == 0, result.output
    assert "decode: the median of 2 rounds (range)" in result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| thermocline")]
    assert len(rows) == 2 and all("-" in row.split("|")[3] for row in rows)  # "median (lo-hi)"
    result = invoke(str(path), "--rounds", "0")
    assert result.exit_code == 2 and "Invalid value for '--rounds'" in result.output
    result = invoke(str(path), "-n", "500")  # the tiny model's context is 128 tokens
    assert isinstance(result.exception, ThermoclineError)
    assert "lower --new-tokens" in str(result.exception)


def test_sparsity_and_bytes_are_the_timed_decodes(tmp_path, monkeypatch):
    """Counted over the timed decode's tokens alone, not those of the prefill timing and the
    recall pass that follow it."""
    model = load_artifact_model(tiny_artifact(tmp_path, []), "fp16").model
    counted, real = [], bench.realized_sparsity

    def realized(model):
        counted.append([f.stats.tokens for f in bench.sparse_ffns(model)])
        return real(model)

    monkeypatch.setattr(bench, "realized_sparsity", realized)
    bench.bench_model("sparse", "fp16", model, [1, 2, 3, 4, 5], 6)
    assert counted == [[6] * model.cfg.n_layers]
