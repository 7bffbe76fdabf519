"""Chat templates rendered with Hugging Face's apply_chat_template semantics.

The expected prompts are written out by hand from what HF's environment does (trim_blocks,
lstrip_blocks, loopcontrols, tojson with ensure_ascii=False, raise_exception, strftime_now).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from canisters.llama.chat_template import ChatTemplate, ChatTemplateError
from canisters.llama.gguf_file import read_gguf
from canisters.llama.tokenizer import Tokenizer

SYNTHETIC = """\
{{ bos_token }}
{% for message in messages %}
    {% if message.role not in ['system', 'user', 'assistant'] %}
        {{ raise_exception('unknown role ' + message.role) }}
    {% endif %}
    {% if message.role == 'system' and not loop.first %}
        {% continue %}
    {% endif %}
[{{ message.role | upper }}] {{ message.content | trim }}
    {% if message.role == 'assistant' %}
{% generation %}{{ eos_token }}{% endgeneration %}
    {% endif %}
{% endfor %}
{% if tools %}Tools: {{ tools | tojson }}
{% endif %}
{% if add_generation_prompt %}[ASSISTANT]{% endif %}"""


def synthetic() -> ChatTemplate:
    return ChatTemplate.from_source(SYNTHETIC, bos_token="<s>", eos_token="</s>")


def test_blocks_are_trimmed_and_loop_controls_work_as_in_hf() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "  Hi  "},
        {"role": "system", "content": "skipped by continue"},
        {"role": "assistant", "content": "Hello!"},
    ]
    assert synthetic().render(messages) == (
        "<s>\n[SYSTEM] Be brief.\n[USER] Hi\n[ASSISTANT] Hello!\n</s>[ASSISTANT]"
    )  # trim_blocks eats the newline after {% endgeneration %}
    assert synthetic().render(messages[:2], add_generation_prompt=False) == "<s>\n[SYSTEM] Be brief.\n[USER] Hi\n"


def test_tojson_keeps_unicode_and_extra_variables_reach_the_template() -> None:
    tools = [{"name": "météo", "args": {"city": "Zürich"}}]
    rendered = synthetic().render([{"role": "user", "content": "x"}], add_generation_prompt=False, tools=tools)
    assert rendered == '<s>\n[USER] x\nTools: [{"name": "météo", "args": {"city": "Zürich"}}]\n'


def test_strftime_now_formats_the_time_given_and_refuses_without_one() -> None:
    template = ChatTemplate.from_source("Today is {{ strftime_now('%d %B %Y') }}.")
    now = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
    assert template.render([], now=now) == "Today is 21 November 2026."
    with pytest.raises(ChatTemplateError, match="pass now="):
        template.render([])


def test_template_errors_are_clear() -> None:
    with pytest.raises(ChatTemplateError, match="refused the conversation: unknown role tool"):
        synthetic().render([{"role": "tool", "content": "42"}])
    with pytest.raises(ChatTemplateError, match=r"not valid Jinja \(line 1"):
        ChatTemplate.from_source("{% for m in messages %}")
    with pytest.raises(ChatTemplateError, match="SecurityError"):
        ChatTemplate.from_source("{{ messages.append(1) }}").render([])  # the sandbox is immutable
    with pytest.raises(ChatTemplateError, match="message 0 has no 'role'"):
        synthetic().render([{"content": "hi"}])
    with pytest.raises(ChatTemplateError, match="should be a list"):
        synthetic().render("hi")  # type: ignore[arg-type]


def test_a_model_without_a_template_gets_a_clear_error() -> None:
    fields = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2", "tokenizer.ggml.tokens": ["a"],
              "tokenizer.ggml.merges": []}
    with pytest.raises(ChatTemplateError, match="no chat template"):
        ChatTemplate.from_metadata(fields, Tokenizer.from_metadata(fields))


@pytest.mark.real_model
def test_smollm2_template_renders_chatml_with_its_default_system_prompt(smollm2_path: Path) -> None:
    fields = read_gguf(smollm2_path).fields
    tokenizer = Tokenizer.from_metadata(fields)
    template = ChatTemplate.from_metadata(fields, tokenizer)
    assert (template.bos_token, template.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert template.render([{"role": "user", "content": "What is 2+2?"}]) == (
        "<|im_start|>system\n"
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    conversation = [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Bonjour"},
    ]
    assert template.render(conversation, add_generation_prompt=False) == (
        "<|im_start|>system\nAnswer in French.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nBonjour<|im_end|>\n"
    )
    prompt = template.render([{"role": "user", "content": "Hi"}])
    ids = tokenizer.encode(prompt, parse_special=True)
    assert ids.count(tokenizer.token_id("<|im_start|>")) == 3 and ids.count(tokenizer.token_id("<|im_end|>")) == 2
