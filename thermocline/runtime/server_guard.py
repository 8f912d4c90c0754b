"""ASGI middleware in front of the server's routes: the body size limit and the request log."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from thermocline.runtime.server_api import ApiError
from thermocline.runtime.server_worker import Job

log = logging.getLogger("thermocline.server")


class RequestGuard:
    """ASGI middleware: refuses bodies over the limit with 413, logs one line per request."""

    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})  # request.state of the handlers, read back here
        start, status = time.perf_counter(), 500

        async def send_logged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            body = await self._read_body(scope, receive)
            if body is None:
                too_big = f"request body exceeds {self.max_body_bytes} bytes"
                refusal = ApiError(413, too_big, code="body_too_large").response()
                await refusal(scope, receive, send_logged)
            else:
                await self.app(scope, self._replay(body, receive), send_logged)
        finally:
            job: Job | None = state.get("job")
            tokens = ""
            if job is not None:
                r = job.result
                finish = "cancelled" if job.cancelled.is_set() else r.finish_reason
                tokens = (
                    f" prompt={r.prompt_tokens} completion={r.completion_tokens} finish={finish}"
                )
            ms = (time.perf_counter() - start) * 1000
            log.info("%s %s %d%s %.1fms", scope["method"], scope["path"], status, tokens, ms)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None when it is larger than allowed (by header or by count)."""
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return None
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                return bytes(body)

    @staticmethod
    def _replay(body: bytes, receive: Receive) -> Receive:
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:  # later reads wait for the client to disconnect
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay
