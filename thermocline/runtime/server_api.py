"""The OpenAI wire format: request bodies (validated by pydantic), responses and stream chunks."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, ClassVar, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from thermocline.runtime.generate import Completion

Stops = str | Annotated[list[str], Field(max_length=4)]


class ApiError(Exception):
    """A request the server refuses (4xx) or fails (5xx), sent as OpenAI's error JSON."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """Fields both endpoints share. None means the OpenAI default, as the API allows."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: Stops | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    logprobs: Any = None
    user: str | None = None

    # Accepted only at their "off" values; anything else is refused by name, not ignored.
    unsupported: ClassVar[dict[str, tuple]] = {"n": (None, 1), "logprobs": (None, False, 0)}

    def check_supported(self) -> None:
        for name, off in self.unsupported.items():
            if getattr(self, name) not in off:
                raise ApiError(400, f"{name}={getattr(self, name)!r} is not supported", name)

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class CompletionRequest(SamplingRequest):
    prompt: str | list[int] | list[str]
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None
    unsupported: ClassVar[dict[str, tuple]] = {
        **SamplingRequest.unsupported,
        "echo": (None, False),
        "suffix": (None, ""),
        "best_of": (None, 1),
    }


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name of max_tokens
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    response_format: Any = None
    unsupported: ClassVar[dict[str, tuple]] = {
        **SamplingRequest.unsupported,
        "top_logprobs": (None, 0),
        "tools": (None, []),
        "response_format": (None,),
    }

    def template_messages(self) -> list[dict[str, str]]:
        # Most templates know no "developer" role; it is OpenAI's new name for "system".
        roles = {"developer": "system"}
        return [{"role": roles.get(m.role, m.role), "content": m.text()} for m in self.messages]


def usage(result: Completion) -> dict:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


class ResponseShape:
    """Ids, objects and choices of one response, for the completions or the chat endpoint."""

    def __init__(self, chat: bool, model: str):
        self.chat, self.model = chat, model
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _wrap(self, obj: str, choices: list[dict], **extra: Any) -> dict:
        head = {"id": self.id, "object": obj, "created": self.created, "model": self.model}
        return {**head, "choices": choices, **extra}

    def response(self, result: Completion) -> dict:
        if self.chat:
            content = {"message": {"role": "assistant", "content": result.text}}
        else:
            content = {"text": result.text}
        choice = {"index": 0, **content, "logprobs": None, "finish_reason": result.finish_reason}
        obj = "chat.completion" if self.chat else "text_completion"
        return self._wrap(obj, [choice], usage=usage(result))

    def chunk(self, text: str | None, finish_reason: str | None = None) -> dict:
        """A stream chunk; for chat, text None is the opening chunk that names the role."""
        if not self.chat:
            choice = {
                "index": 0,
                "text": text or "",
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            return self._wrap("text_completion", [choice])
        if text is None:
            delta = {"role": "assistant", "content": ""}
        else:
            delta = {"content": text} if text else {}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._wrap("chat.completion.chunk", [choice])

    def usage_chunk(self, result: Completion) -> dict:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return self._wrap(obj, [], usage=usage(result))
