"""`thermocline chat` driven through typer's test runner, and `serve` wired to its app."""

from __future__ import annotations

import pytest
import typer
from fastapi.testclient import TestClient
from tiny_models import tiny_llama
from typer.testing import CliRunner

from thermocline.errors import ThermoclineError
from thermocline.runtime.chat import ChatSession
from thermocline.runtime.engine import LoadedModel, load_model
from thermocline.runtime.generate import SamplingParams, stream_text
from thermocline.runtime.serve_commands import register

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path, _ = tiny_llama(tmp_path_factory.mktemp("tiny"))
    return path


@pytest.fixture(scope="module")
def loaded(model_dir) -> LoadedModel:
    return load_model(str(model_dir))


def app() -> typer.Typer:
    main = typer.Typer()
    register(main)
    return main


def greedy(loaded: LoadedModel, messages: list[dict[str, str]], n: int) -> str:
    ids = loaded.tokenizer.encode_chat(messages)
    return "".join(stream_text(loaded.model, loaded.tokenizer, ids, SamplingParams(n)))


def test_chat_keeps_history_and_resets(model_dir, loaded):
    lines = "Hi!\nHow are you?\n\n/reset\nHi!\n"  # then end of input, as Ctrl-D
    result = CliRunner().invoke(
        app(), ["chat", str(model_dir), "--temperature", "0", "-n", "8"], input=lines
    )
    assert result.exit_code == 0, result.output
    first = greedy(loaded, [{"role": "user", "content": "Hi!"}], 8)
    history = [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "How are you?"},
    ]
    second = greedy(loaded, history, 8)
    out = result.output
    assert "/reset" in out and "(conversation cleared)" in out
    at = out.index(first)
    at = out.index(second, at + len(first))
    at = out.index("(conversation cleared)", at)
    assert out.index(first, at) > at  # after /reset the first answer comes again


def test_chat_exit_and_system_message(model_dir, loaded):
    args = [
        "chat",
        "--model",
        str(model_dir),
        "--system",
        "Be brief.",
        "--temperature",
        "0",
        "-n",
        "6",
    ]
    result = CliRunner().invoke(app(), args, input="Hello\n/exit\nnever read\n")
    assert result.exit_code == 0, result.output
    system = {"role": "system", "content": "Be brief."}
    assert greedy(loaded, [system, {"role": "user", "content": "Hello"}], 6) in result.output


def test_old_turns_are_dropped_to_fit_the_context(loaded):
    session = ChatSession(loaded, SamplingParams(30), system="sys")
    for i in range(6):  # each turn is ~50 tokens of a 128-token context
        "".join(session.reply(f"message number {i}"))
    assert session.messages[0] == {"role": "system", "content": "sys"}
    assert session.messages[-2] == {"role": "user", "content": "message number 5"}
    assert len(session.messages) < 1 + 2 * 6
    with pytest.raises(ThermoclineError, match="do not fit the context"):
        "".join(session.reply("x" * 200))
    assert session.messages[-2]["content"] == "message number 5"  # the refused message is not kept


def test_serve_builds_the_configured_app(model_dir, monkeypatch):
    calls = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: calls.update(app=app, **kw))
    args = [
        "serve",
        str(model_dir),
        "--port",
        "8123",
        "--served-model-name",
        "tiny",
        "--max-body-bytes",
        "100",
    ]
    result = CliRunner().invoke(app(), args)
    assert result.exit_code == 0, result.output
    assert (calls["host"], calls["port"]) == ("127.0.0.1", 8123)
    with TestClient(calls["app"]) as client:
        assert client.get("/v1/models").json()["data"][0]["id"] == "tiny"
        big = client.post("/v1/completions", json={"model": "tiny", "prompt": "x" * 200})
        assert big.status_code == 413
        ok = client.post("/v1/completions", json={"model": "tiny", "prompt": "Hi", "max_tokens": 3})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3
