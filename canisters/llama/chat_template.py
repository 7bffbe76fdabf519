"""Chat templates: `tokenizer.chat_template` (Jinja) rendered as Hugging Face's apply_chat_template does.

The environment is the one transformers builds: an ImmutableSandboxedEnvironment with trim_blocks
and lstrip_blocks, the loopcontrols extension, a `{% generation %}` block (rendered as its body),
the `tojson` filter with HF's signature, and the globals `raise_exception` and `strftime_now`.
Templates see `messages`, `add_generation_prompt`, `bos_token`, `eos_token`, `tools` and
`documents`, plus any extra variables the caller passes.

On-chain code must not read the wall clock, so `strftime_now` formats the time given to `render`
(the canister's time); a template that asks for the time without one gets a clear error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox

from canisters.llama.tokenizer import Tokenizer

TEMPLATE_KEY = "tokenizer.chat_template"


class ChatTemplateError(ValueError):
    """The chat template is missing, invalid, or refused the conversation."""


class _GenerationBlock(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}`: HF marks assistant text with it; it renders its body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


class _TemplateRaised(Exception):
    """raise_exception() was called by the template."""


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@dataclass(frozen=True)
class ChatTemplate:
    source: str
    bos_token: str
    eos_token: str
    _template: jinja2.Template = field(repr=False, compare=False)

    @classmethod
    def from_source(cls, source: str, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
        environment = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols, _GenerationBlock]
        )
        environment.filters["tojson"] = _tojson
        environment.globals["raise_exception"] = _raise_exception
        try:
            template = environment.from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise ChatTemplateError(f"the chat template is not valid Jinja (line {e.lineno}: {e.message}); "
                                    "fix tokenizer.chat_template or format the prompt yourself") from None
        return cls(source, bos_token, eos_token, template)

    @classmethod
    def from_metadata(cls, fields: Mapping[str, Any], tokenizer: Tokenizer) -> ChatTemplate:
        """The model's template, with its BOS and EOS token texts."""
        source = fields.get(TEMPLATE_KEY)
        if not source:
            raise ChatTemplateError(f"the model has no chat template ({TEMPLATE_KEY} is missing); "
                                    "send the prompt as raw text instead of chat messages")
        if not isinstance(source, str):
            raise ChatTemplateError(f"{TEMPLATE_KEY} should be a string, got {type(source).__name__}")

        def text(token: int | None) -> str:
            return "" if token is None else tokenizer.tokens[token]

        return cls.from_source(source, text(tokenizer.special.bos), text(tokenizer.special.eos))

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
               now: datetime | None = None, **variables: Any) -> str:
        """The prompt text for a conversation; `now` is what `strftime_now` formats."""
        _check_messages(messages)

        def strftime_now(format: str) -> str:
            if now is None:
                raise ChatTemplateError("this chat template formats the current time (strftime_now); "
                                        "pass now= (the canister's time) to render")
            return now.strftime(format)

        context = {"tools": None, "documents": None, **variables}
        try:
            return self._template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                strftime_now=strftime_now,
                **context,
            )
        except _TemplateRaised as e:
            raise ChatTemplateError(f"the chat template refused the conversation: {e}") from None
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"the chat template failed: {type(e).__name__}: {e}") from None


def _check_messages(messages: Sequence[Mapping[str, Any]]) -> None:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ChatTemplateError("messages should be a list of {'role': ..., 'content': ...} dicts, "
                                f"got {type(messages).__name__}")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ChatTemplateError(f"message {i} should be a dict with 'role' and 'content', "
                                    f"got {type(message).__name__}")
        if not isinstance(message.get("role"), str):
            raise ChatTemplateError(f"message {i} has no 'role' string (e.g. 'system', 'user', 'assistant')")
        if "content" in message and not isinstance(message["content"], (str, list, type(None))):
            raise ChatTemplateError(f"message {i} 'content' should be a string, got "
                                    f"{type(message['content']).__name__}")
