"""Text <-> token ids, chat templates and incremental (streaming) detokenization."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from thermocline.errors import ThermoclineError


def _raise(message: str) -> None:
    raise TemplateError(message)


@dataclass
class TextTokenizer:
    """A `tokenizers.Tokenizer` (BOS, if any, added by its post-processor) plus chat metadata."""

    tokenizer: Tokenizer
    chat_template: str | None = None
    eos_ids: list[int] = field(default_factory=list)
    bos_token: str = ""
    eos_token: str = ""

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def render_chat(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The chat template rendered in a sandbox: a template from a file is never trusted."""
        if not self.chat_template:
            raise ThermoclineError("this model has no chat template; use a plain prompt")
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        try:
            return env.from_string(self.chat_template).render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except TemplateError as error:
            raise ThermoclineError(f"chat template failed: {error}") from error

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        # The template writes BOS itself where the model wants it.
        return self.encode(self.render_chat(messages), add_special_tokens=False)

    def to_json(self) -> dict:
        return {
            "tokenizer": json.loads(self.tokenizer.to_str()),
            "chat_template": self.chat_template,
            "eos_ids": self.eos_ids,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
        }

    @classmethod
    def from_json(cls, data: dict) -> TextTokenizer:
        return cls(
            tokenizer=Tokenizer.from_str(json.dumps(data["tokenizer"])),
            chat_template=data.get("chat_template"),
            eos_ids=list(data.get("eos_ids", [])),
            bos_token=data.get("bos_token", ""),
            eos_token=data.get("eos_token", ""),
        )


class StreamDecoder:
    """Turns generated ids into text pieces as they come, never splitting a UTF-8 character.

    Decodes a short window of ids each step (the previous text's tail and the new ids) so a
    token that is only part of a character is held back until the character completes.
    """

    def __init__(self, tokenizer: TextTokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # start of the window whose text was already emitted
        self.read = 0  # end of the ids whose text was already emitted

    def push(self, token: int) -> str:
        self.ids.append(token)
        emitted = self.tokenizer.decode(self.ids[self.prefix : self.read])
        text = self.tokenizer.decode(self.ids[self.prefix :])
        if len(text) > len(emitted) and not text.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return text[len(emitted) :]
        return ""
