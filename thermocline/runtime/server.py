"""The OpenAI-compatible HTTP server: /v1/models, /v1/completions, /v1/chat/completions, /health.

FastAPI parses and validates; the engine worker (server_worker.py) runs one generation at a
time. User mistakes get a 4xx with OpenAI's error JSON, and every request one log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from thermocline.errors import ThermoclineError
from thermocline.runtime.engine import LoadedModel
from thermocline.runtime.generate import SamplingParams
from thermocline.runtime.server_api import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    ResponseShape,
    SamplingRequest,
)
from thermocline.runtime.server_guard import RequestGuard
from thermocline.runtime.server_worker import EngineWorker, Job

log = logging.getLogger("thermocline.server")


@dataclass
class ServerConfig:
    served_names: tuple[str, ...] = ()  # model ids clients may ask for; empty: the loaded name
    max_prompt_tokens: int | None = None  # longest prompt accepted; None: the model's context
    max_tokens_limit: int = 1024  # most tokens one request may generate
    max_body_bytes: int = 1 << 20  # larger request bodies get 413
    default_chat_tokens: int = 256  # max_tokens of a chat request that gives none
    default_completion_tokens: int = 16  # OpenAI's default for /v1/completions

    def __post_init__(self) -> None:
        limits = (self.max_tokens_limit, self.max_body_bytes, self.max_prompt_tokens or 1)
        if min(limits) < 1:
            raise ThermoclineError(
                "server limits (prompt tokens, max tokens, body bytes) must be >= 1"
            )


class Service:
    """What the routes share: the model, its worker, the names it answers to and the limits."""

    def __init__(self, loaded: LoadedModel, config: ServerConfig):
        self.loaded, self.config = loaded, config
        self.names = config.served_names or (loaded.name,)
        self.worker = EngineWorker(loaded)
        self.context = loaded.model.cfg.max_seq_len

    def check_model(self, name: str) -> None:
        if name not in self.names:
            raise ApiError(
                404,
                f"model {name!r} not found; this server runs {', '.join(self.names)}",
                "model",
                "model_not_found",
            )

    def completion_prompt(self, req: CompletionRequest) -> list[int]:
        prompt = req.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            if len(prompt) > 1:
                raise ApiError(400, "only one prompt per request is supported", "prompt")
            prompt = prompt[0]
        if isinstance(prompt, str):
            return self.loaded.tokenizer.encode(prompt)
        vocab = self.loaded.tokenizer.vocab_size
        if any(not 0 <= t < vocab for t in prompt):
            raise ApiError(400, f"prompt token ids must be in [0, {vocab})", "prompt")
        return list(prompt)

    def chat_prompt(self, req: ChatRequest) -> list[int]:
        try:
            return self.loaded.tokenizer.encode_chat(req.template_messages())
        except ThermoclineError as error:
            raise ApiError(400, str(error), "messages") from error

    def sampling(
        self, req: SamplingRequest, n_prompt: int, max_tokens: int | None, default: int
    ) -> SamplingParams:
        """Sampling parameters within the limits; a prompt that leaves no room is refused."""
        param = "messages" if isinstance(req, ChatRequest) else "prompt"
        if n_prompt == 0:
            raise ApiError(400, "the prompt is empty", param)
        longest = min(self.config.max_prompt_tokens or self.context, self.context - 1)
        if n_prompt > longest:
            raise ApiError(
                400,
                f"the prompt has {n_prompt} tokens; at most {longest} are accepted",
                param,
                "context_length_exceeded",
            )
        if max_tokens is not None and max_tokens > self.config.max_tokens_limit:
            raise ApiError(
                400,
                f"max_tokens is {max_tokens}; at most {self.config.max_tokens_limit} are allowed",
                "max_tokens",
            )
        if max_tokens is not None and n_prompt + max_tokens > self.context:
            raise ApiError(
                400,
                f"the prompt ({n_prompt} tokens) and max_tokens ({max_tokens}) exceed the model's context of {self.context} tokens",
                "max_tokens",
                "context_length_exceeded",
            )
        if max_tokens is None:
            max_tokens = min(default, self.config.max_tokens_limit, self.context - n_prompt)
        temperature = 1.0 if req.temperature is None else req.temperature
        top_p = 1.0 if req.top_p is None else req.top_p
        return SamplingParams(max_tokens, temperature, 0, top_p, req.seed, req.stops())

    async def respond(
        self, request: Request, req: SamplingRequest, prompt: list[int], params: SamplingParams
    ) -> Response:
        shape = ResponseShape(isinstance(req, ChatRequest), req.model)
        job = self.worker.submit(prompt, params)
        request.state.job = job
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            return StreamingResponse(
                _events(job, shape, include_usage), media_type="text/event-stream", headers=headers
            )
        if not await _finish_unless_disconnected(request, job):
            return Response(status_code=499)  # nobody reads it; the status is for the log line
        return JSONResponse(shape.response(job.result))


def _sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


async def _events(job: Job, shape: ResponseShape, include_usage: bool) -> AsyncIterator[str]:
    """The server-sent events of a stream; a client that leaves cancels the job (via pieces())."""
    if shape.chat:
        yield _sse(shape.chunk(None))
    try:
        async for piece in job.pieces():
            yield _sse(shape.chunk(piece))
    except Exception as error:
        yield _sse(_failure(error).body())
        return
    yield _sse(shape.chunk("", job.result.finish_reason))
    if include_usage:
        yield _sse(shape.usage_chunk(job.result))
    yield _sse("[DONE]")


def _failure(error: Exception) -> ApiError:
    log.error("generation failed: %s", error)
    return ApiError(500, f"generation failed: {error}", code="server_error")


async def _finish_unless_disconnected(request: Request, job: Job) -> bool:
    """Wait for the job; cancel it and return False if the client disconnects first."""

    async def drain() -> None:
        async for _ in job.pieces():
            pass

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    done_task, gone_task = asyncio.ensure_future(drain()), asyncio.ensure_future(disconnected())
    await asyncio.wait({done_task, gone_task}, return_when=asyncio.FIRST_COMPLETED)
    gone_task.cancel()
    if not done_task.done():
        job.cancel()
        done_task.cancel()
        return False
    if done_task.exception() is not None:
        raise _failure(done_task.exception())
    return True


def create_app(loaded: LoadedModel, config: ServerConfig | None = None) -> FastAPI:
    """The FastAPI app serving `loaded`; its lifespan starts and stops the engine worker."""
    service = Service(loaded, config or ServerConfig())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.worker.start()
        yield
        service.worker.stop()

    app = FastAPI(title="thermocline", lifespan=lifespan)
    app.add_middleware(RequestGuard, max_body_bytes=service.config.max_body_bytes)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        if first["type"] == "json_invalid":
            reason = first.get("ctx", {}).get("error", "")
            return ApiError(400, f"the body is not valid JSON: {reason}").response()
        param = ".".join(str(part) for part in first["loc"] if part != "body") or None
        message = f"{param}: {first['msg']}" if param else first["msg"]
        return ApiError(400, message, param, first["type"]).response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return ApiError(
            error.status_code, str(error.detail), code=str(error.status_code)
        ).response()

    @app.exception_handler(Exception)
    async def crash(request: Request, error: Exception) -> JSONResponse:
        return ApiError(500, f"internal error: {error}", code="server_error").response()

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "model": service.names[0],
            "mode": loaded.mode,
            "waiting": service.worker.waiting,
        }

    def model_card(name: str) -> dict:
        return {"id": name, "object": "model", "created": 0, "owned_by": "thermocline"}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [model_card(name) for name in service.names]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> dict:
        service.check_model(name)
        return model_card(name)

    @app.post("/v1/completions")
    async def completions(request: Request, req: CompletionRequest) -> Response:
        service.check_model(req.model)
        req.check_supported()
        prompt = service.completion_prompt(req)
        params = service.sampling(
            req, len(prompt), req.max_tokens, service.config.default_completion_tokens
        )
        return await service.respond(request, req, prompt, params)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, req: ChatRequest) -> Response:
        service.check_model(req.model)
        req.check_supported()
        prompt = service.chat_prompt(req)
        max_tokens = req.max_completion_tokens or req.max_tokens
        params = service.sampling(req, len(prompt), max_tokens, service.config.default_chat_tokens)
        return await service.respond(request, req, prompt, params)

    return app
