"""The OpenAI-compatible server on a free loopback port, driven by the official client and raw HTTP."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import openai
import pytest
import torch
import uvicorn
from tiny_models import tiny_llama

from thermocline.runtime.engine import LoadedModel, load_model
from thermocline.runtime.generate import Completion, SamplingParams, stream_text
from thermocline.runtime.server import ServerConfig, create_app

NAME = "tiny"
CONFIG = ServerConfig(
    served_names=(NAME,), max_prompt_tokens=300, max_tokens_limit=1000, max_body_bytes=8192
)


@contextmanager
def running_server(app) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread on a free loopback port; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> Iterator[LoadedModel]:
    # One thread: on a shared 2-core machine torch's thread pool makes step times erratic.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path, _ = tiny_llama(tmp_path_factory.mktemp("tiny"), max_position_embeddings=1024)
    yield load_model(str(path))
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def url(loaded) -> Iterator[str]:
    with running_server(create_app(loaded, CONFIG)) as base:
        yield base


@pytest.fixture
def client(url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def reference(
    loaded: LoadedModel, ids: list[int], n: int, stop: list[str] | None = None
) -> Completion:
    """What the engine produces alone, greedily."""
    result = Completion()
    list(
        stream_text(loaded.model, loaded.tokenizer, ids, SamplingParams(n, stop=stop or []), result)
    )
    return result


def complete(client: openai.OpenAI, prompt: str, n: int, stream: bool = False) -> str:
    out = client.completions.create(
        model=NAME, prompt=prompt, max_tokens=n, temperature=0, stream=stream
    )
    return "".join(c.choices[0].text for c in out) if stream else out.choices[0].text


def test_models_and_health(client, url):
    assert [m.id for m in client.models.list()] == [NAME]
    assert client.models.retrieve(NAME).id == NAME
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["model"] == NAME and health["mode"] == "dense"


def test_completion_matches_the_engine(client, loaded):
    ref = reference(loaded, loaded.tokenizer.encode("Hello there"), 20)
    out = client.completions.create(model=NAME, prompt="Hello there", max_tokens=20, temperature=0)
    assert out.object == "text_completion" and out.model == NAME
    assert out.choices[0].text == ref.text
    assert out.choices[0].finish_reason == ref.finish_reason
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (
        ref.prompt_tokens,
        ref.completion_tokens,
    )
    assert out.usage.total_tokens == ref.prompt_tokens + ref.completion_tokens


def test_completion_stream_with_usage(client, loaded):
    ref = reference(loaded, loaded.tokenizer.encode("Hello there"), 20)
    chunks = list(
        client.completions.create(
            model=NAME,
            prompt="Hello there",
            max_tokens=20,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == ref.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == ref.finish_reason
    assert chunks[-1].usage.completion_tokens == ref.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_chat_uses_the_template(client, loaded):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    ref = reference(loaded, loaded.tokenizer.encode_chat(messages), 16)
    out = client.chat.completions.create(
        model=NAME, messages=messages, max_tokens=16, temperature=0
    )
    assert out.object == "chat.completion"
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == ref.text
    assert out.usage.prompt_tokens == ref.prompt_tokens

    chunks = list(
        client.chat.completions.create(
            model=NAME, messages=messages, max_completion_tokens=16, temperature=0, stream=True
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ref.text
    assert chunks[-1].choices[0].finish_reason == ref.finish_reason
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_stop_strings(client, loaded):
    prompt = "The quick brown fox"
    full = reference(loaded, loaded.tokenizer.encode(prompt), 40).text
    stop = full[10:12]
    for stops in (stop, [stop, "never appears"]):
        out = client.completions.create(
            model=NAME, prompt=prompt, max_tokens=40, temperature=0, stop=stops
        )
        assert out.choices[0].text == full[: full.index(stop)]
        assert out.choices[0].finish_reason == "stop"


def test_seeded_sampling_repeats(client):
    def sample(seed: int) -> str:
        out = client.completions.create(
            model=NAME, prompt="Hello", max_tokens=24, temperature=1.0, top_p=0.9, seed=seed
        )
        return out.choices[0].text

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def error_of(response: httpx.Response) -> dict:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def chat(**fields) -> dict:
    return {"model": NAME, "messages": [{"role": "user", "content": "hi"}], **fields}


BAD_REQUESTS = [
    # (path, raw body or JSON, status, param)
    ("/v1/completions", b'{"model": "tiny", "prompt": "hi"', 400, None),
    ("/v1/completions", b"not json at all", 400, None),
    ("/v1/completions", {"model": NAME, "prompt": 5}, 400, "prompt"),
    ("/v1/completions", {"prompt": "hi"}, 400, "model"),
    ("/v1/completions", {"model": NAME, "prompt": "hi", "temperature": "hot"}, 400, "temperature"),
    ("/v1/completions", {"model": NAME, "prompt": "hi", "max_tokens": -3}, 400, "max_tokens"),
    ("/v1/completions", {"model": NAME, "prompt": "hi", "max_tokens": 5000}, 400, "max_tokens"),
    ("/v1/completions", {"model": NAME, "prompt": "hi", "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {"model": NAME, "prompt": "hi", "n": 2}, 400, "n"),
    ("/v1/completions", {"model": NAME, "prompt": "hi", "logprobs": 3}, 400, "logprobs"),
    ("/v1/completions", {"model": NAME, "prompt": ["a", "b"]}, 400, "prompt"),
    ("/v1/completions", {"model": NAME, "prompt": [1, 99999]}, 400, "prompt"),
    ("/v1/completions", {"model": NAME, "prompt": ""}, 400, "prompt"),
    ("/v1/completions", {"model": NAME, "prompt": "x" * 301}, 400, "prompt"),
    ("/v1/completions", {"model": NAME, "prompt": "x" * 300, "max_tokens": 800}, 400, "max_tokens"),
    ("/v1/completions", {"model": "gpt-4", "prompt": "hi"}, 404, "model"),
    ("/v1/completions", {"model": NAME, "prompt": "x" * 9000}, 413, None),
    ("/v1/chat/completions", {"model": NAME, "messages": "hi"}, 400, "messages"),
    ("/v1/chat/completions", {"model": NAME, "messages": []}, 400, "messages"),
    ("/v1/chat/completions", chat(messages=[{"role": "wizard", "content": "hi"}]), 400, None),
    ("/v1/chat/completions", chat(stop=["a", "b", "c", "d", "e"]), 400, None),
    ("/v1/chat/completions", chat(stream="yes please"), 400, "stream"),
    ("/v1/chat/completions", chat(tools=[{"type": "function"}]), 400, "tools"),
    ("/v1/chat/completions", chat(model="nope"), 404, "model"),
    ("/v1/nowhere", {}, 404, None),
]


@pytest.mark.parametrize(("path", "body", "status", "param"), BAD_REQUESTS)
def test_bad_requests_get_openai_errors(client, loaded, url, path, body, status, param):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = httpx.post(f"{url}{path}", **kwargs)
    assert response.status_code == status, response.text
    error = error_of(response)
    if param is not None:
        assert error["param"] is not None and error["param"].startswith(param)
    if status == 404 and param == "model":
        assert error["code"] == "model_not_found"
    # ...and the server still answers correctly afterwards.
    ref = reference(loaded, loaded.tokenizer.encode("ok"), 8)
    assert complete(client, "ok", 8) == ref.text


def test_oversized_body_without_content_length(url):
    def chunks():
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(20):
            yield b"x" * 1000
        yield b'"}'

    response = httpx.post(f"{url}/v1/completions", content=chunks())
    assert response.status_code == 413 and error_of(response)["code"] == "body_too_large"
    assert httpx.get(f"{url}/v1/models").status_code == 200


def test_wrong_method(url):
    response = httpx.get(f"{url}/v1/completions")
    assert response.status_code == 405 and error_of(response)


def test_one_log_line_per_request(client, caplog):
    with caplog.at_level(logging.INFO, logger="thermocline.server"):
        complete(client, "log me", 5)
        complete(client, "log me", 5, stream=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "thermocline.server"]
    assert len(lines) == 2, lines
    assert all(line.startswith("POST /v1/completions 200 prompt=6 completion=") for line in lines)


def test_concurrent_clients_get_their_sequential_outputs(url, client):
    prompts = [f"Client {i} says" + "!" * i for i in range(8)]
    alone = [complete(client, p, 24, stream=i % 2 == 0) for i, p in enumerate(prompts)]

    def run(i: int) -> str:
        own = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        return complete(own, prompts[i], 24, stream=i % 2 == 1)

    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(run, range(8)))
    assert together == alone
    assert len(set(alone)) > 1


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@pytest.mark.parametrize("stream", [True, False])
def test_disconnect_frees_the_engine(url, client, stream):
    """A client that leaves mid-generation delays the next request by about one decode step."""
    long_prompt, long_tokens = "The quick brown fox", 900
    one = min(timed(lambda: complete(client, "short", 1)) for _ in range(3))
    step = (timed(lambda: complete(client, "short", 101)) - one) / 100
    body = {"model": NAME, "prompt": long_prompt, "max_tokens": long_tokens, "temperature": 0}
    if stream:
        with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}) as r:
            events = (line for line in r.iter_lines() if line)
            next(events), next(events)
    else:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/completions", json=body, timeout=httpx.Timeout(5, read=0.3))
    after = timed(lambda: complete(client, "short", 1))
    # Without cancellation the next request waits for ~900 steps; allow slack for the
    # pieces the decoder holds back (partial UTF-8) and for a busy machine.
    limit = 3 * one + 40 * step + 0.05
    assert limit < long_tokens * step / 2, "the test cannot tell: steps are too fast"
    assert after < limit, f"{after:.3f}s after a disconnect; one step {step * 1000:.1f}ms"


@pytest.mark.slow
def test_smollm2_chat_through_the_server():
    smollm2 = load_model("smollm2-135m")
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ref = reference(smollm2, smollm2.tokenizer.encode_chat(messages), 8)
    with running_server(create_app(smollm2)) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        out = client.chat.completions.create(
            model="smollm2-135m", messages=messages, max_tokens=8, temperature=0
        )
        streamed = client.chat.completions.create(
            model="smollm2-135m", messages=messages, max_tokens=8, temperature=0, stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in streamed)
    assert out.choices[0].message.content == ref.text == text
    assert out.usage.completion_tokens == ref.completion_tokens
