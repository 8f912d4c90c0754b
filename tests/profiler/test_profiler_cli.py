"""`thermocline profile` and `thermocline perplexity --thresholds` through typer."""

import pytest
import typer
from profiler_helpers import tiny_checkpoint
from typer.testing import CliRunner

from thermocline.errors import ThermoclineError
from thermocline.profiler import commands as profiler_commands
from thermocline.profiler import load_profile
from thermocline.runtime import commands as runtime_commands

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def app():
    app = typer.Typer()
    profiler_commands.register(app)
    runtime_commands.register(app)
    return app


def test_profile_then_oracle_perplexity(tmp_path, app):
    checkpoint = str(tiny_checkpoint(tmp_path / "model", "silu"))
    out = tmp_path / "profile"
    args = ["profile", checkpoint, "--out", str(out), "--tokens", "512", "--seq-len", "64"]
    args += ["--train-tokens", "128", "--calib-tokens", "512", "--target-sparsity", "0.4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "512 tokens of wikitext-2 (calibration)" in result.output
    assert "sparsity 40.0%" in result.output
    assert load_profile(out).meta["target_sparsity"] == 0.4
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "up to date" in again.output

    ppl = ["perplexity", "--model", checkpoint, "--window", "64", "--max-tokens", "640"]
    result = CliRunner().invoke(app, [*ppl, "--thresholds", str(out)])
    assert result.exit_code == 0, result.output
    assert "realized sparsity" in result.output
    realized = float(result.output.split("realized sparsity ")[1].split("%")[0])
    assert 30 < realized < 50  # eval text, thresholds calibrated on other text


def test_profile_errors_are_thermocline_errors(tmp_path, app):
    checkpoint = str(tiny_checkpoint(tmp_path / "model", "relu"))
    result = CliRunner().invoke(
        app, ["profile", checkpoint, "--out", str(tmp_path / "p"), "--seq-len", "0"]
    )
    assert isinstance(result.exception, ThermoclineError)
    result = CliRunner().invoke(
        app, ["profile", checkpoint, "--out", str(tmp_path / "p"), "--seq-len", "4096"]
    )
    assert "exceeds the model's context" in str(result.exception)
    result = CliRunner().invoke(app, ["perplexity", checkpoint, "--thresholds", str(tmp_path)])
    assert "not a profile" in str(result.exception)
