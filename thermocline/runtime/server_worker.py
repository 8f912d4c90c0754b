"""The engine worker: one thread runs the server's generations one at a time, in arrival order.

Torch work stays off the event loop. Each generation makes its own KV cache, so queued
requests never see each other's state, and greedy outputs do not depend on the traffic.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from thermocline.runtime.engine import LoadedModel
from thermocline.runtime.generate import Completion, SamplingParams, stream_text

log = logging.getLogger("thermocline.server")

_DONE = object()  # the last item of every job's output queue, unless an exception is


@dataclass
class Job:
    """One generation: what to run, where its text pieces go, and a flag to stop it early."""

    prompt: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    result: Completion = field(default_factory=Completion)
    cancelled: threading.Event = field(default_factory=threading.Event)
    out: asyncio.Queue = field(default_factory=asyncio.Queue)

    def cancel(self) -> None:
        self.cancelled.set()

    def send(self, item: object) -> None:
        """From the worker thread: hand an item to the request's event loop."""
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancel()

    async def pieces(self) -> AsyncIterator[str]:
        """Text pieces as the engine makes them; a consumer that stops early cancels the job."""
        finished = False
        try:
            while (item := await self.out.get()) is not _DONE:
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
            finished = True
        finally:
            if not finished:
                self.cancel()


class EngineWorker:
    """A queue of jobs and the one thread that runs them on the loaded model."""

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="thermocline-engine", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.jobs.put(None)
            self.thread.join()
            self.thread = None

    def submit(self, prompt: list[int], params: SamplingParams) -> Job:
        """Queue a generation; call from the event loop that will read the job's pieces."""
        job = Job(prompt, params, asyncio.get_running_loop())
        self.jobs.put(job)
        return job

    @property
    def waiting(self) -> int:
        return self.jobs.qsize()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            job.send(self._generate(job))

    def _generate(self, job: Job) -> object:
        """Stream the job's pieces; the end marker, or the exception that ended it."""
        if job.cancelled.is_set():  # its client left while it waited
            return _DONE
        pieces = stream_text(
            self.loaded.model, self.loaded.tokenizer, job.prompt, job.params, job.result
        )
        try:
            for piece in pieces:
                # Checked between pieces: closing the generator ends the generation at once.
                if job.cancelled.is_set():
                    break
                job.send(piece)
        except Exception as error:  # reported to its request; the worker keeps serving
            log.exception("generation failed")
            return error
        finally:
            pieces.close()
        return _DONE
