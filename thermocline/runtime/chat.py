"""An interactive multi-turn chat in the terminal: the model's chat template, streamed replies."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from thermocline.errors import ThermoclineError
from thermocline.runtime.engine import LoadedModel
from thermocline.runtime.generate import Completion, SamplingParams, stream_text

HELP = "Type a message; /reset clears the conversation, /exit (or Ctrl-D) quits."


class ChatSession:
    """The conversation so far, and the model that continues it."""

    def __init__(self, loaded: LoadedModel, params: SamplingParams, system: str | None = None):
        self.loaded, self.params = loaded, params
        self.base = [{"role": "system", "content": system}] if system else []
        self.messages = list(self.base)

    def reset(self) -> None:
        self.messages = list(self.base)

    def _fit(self, text: str) -> list[int]:
        """Add the user's message, dropping the oldest turns until the reply fits the context."""
        context = self.loaded.model.cfg.max_seq_len
        turns = [*self.messages[len(self.base) :], {"role": "user", "content": text}]
        while True:
            ids = self.loaded.tokenizer.encode_chat(self.base + turns)
            if len(ids) + self.params.max_new_tokens <= context:
                self.messages = self.base + turns
                return ids
            if len(turns) == 1:  # the history is kept: the message is refused, not the chat
                raise ThermoclineError(
                    f"the message ({len(ids)} tokens) and the reply ({self.params.max_new_tokens}) "
                    f"do not fit the context of {context} tokens; shorten it or lower --max-new-tokens"
                )
            turns = turns[2:]  # the oldest user+assistant pair

    def reply(self, text: str) -> Iterator[str]:
        """Stream the assistant's answer to `text`; it joins the history even if cut short."""
        ids = self._fit(text)
        result = Completion()
        try:
            yield from stream_text(
                self.loaded.model, self.loaded.tokenizer, ids, self.params, result
            )
        finally:
            self.messages.append({"role": "assistant", "content": result.text})


def run_chat(
    session: ChatSession, read: Callable[[str], str] = input, write: Callable[..., object] = print
) -> None:
    """The read-reply loop: `read` shows a prompt and returns a line (EOFError ends the chat)."""
    write(HELP)
    while True:
        try:
            line = read(">>> ").strip()
        except (EOFError, KeyboardInterrupt):
            write("")
            return
        if line == "/exit":
            return
        if line == "/reset":
            session.reset()
            write("(conversation cleared)")
            continue
        if not line:
            continue
        reply = session.reply(line)
        try:
            for piece in reply:
                write(piece, end="", flush=True)
        except KeyboardInterrupt:  # Ctrl-C stops the reply, not the chat
            pass
        except ThermoclineError as error:
            write(f"error: {error}", end="")
        finally:
            reply.close()  # the partial reply joins the history now, not when collected
        write("")
