"""How an example becomes the text a chat template renders: one renderer for billing and for training.

Token counting (``datasets.tokens``) and the training engine (``jobs.training.render``)
both turn an example into conversations with ``example_conversations`` and prepare
each with ``prepare_messages``, so the tokens a user is billed for are the tokens the
engine trains on (``tests/test_rendering.py`` checks it per sample file).

* Chat ``{"messages": [...]}`` is rendered with the tokenizer's chat template as is
  (a template that adds a default system prompt when none is given does so).
* Legacy ``{"input": ..., "target": ...}`` becomes ``user: input`` / ``assistant: target``.
* Preference (DPO) examples are two conversations: the prompt plus the preferred
  output, and the prompt plus the non-preferred output; only the outputs carry loss.
* ``reasoning_content`` of an assistant turn: passed to the template under the name the
  template reads (``reasoning_content``, ``thinking`` or ``reasoning``); otherwise written
  into the content as ``<think>\\n{reasoning}\\n</think>\\n\\n{content}``.
* ``tool_calls`` of an assistant turn: passed to the template when it reads them;
  otherwise appended to the content, one block per call:
  ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`` (Hermes/Qwen style,
  arguments parsed from their JSON string).
* ``tool`` turns: passed as role ``tool`` (with ``tool_call_id``) when the template handles
  tool calls; otherwise their content is wrapped as ``<tool_response>\\n...\\n</tool_response>``.
* Top-level ``tools``: passed as ``tools=`` when the template uses them; otherwise
  described in the system message (``<tools>`` JSON block plus how to call one).
* Text parts of a list content are joined without a separator; image parts are left out
  of the text (images are billed apart: 1,024 or 1,600 tokens each by the platform's rules).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class RenderError(ValueError):
    """An example cannot be rendered (the message says why)."""


@dataclass(frozen=True)
class TemplateCaps:
    """What a chat template knows natively, read from its source."""

    tools: bool = False
    tool_calls: bool = False
    reasoning_field: str | None = None

    @staticmethod
    @lru_cache(maxsize=32)
    def of_template(source: str | None) -> TemplateCaps:
        source = source or ""
        return TemplateCaps(
            tools="tools" in source.replace("tool_calls", ""),
            tool_calls="tool_calls" in source,
            reasoning_field=next((f for f in REASONING_FIELDS if f in source), None),
        )

    @classmethod
    def of(cls, tokenizer) -> TemplateCaps:
        source = tokenizer.chat_template or ""
        if isinstance(source, dict):  # several named templates: the default one is used
            source = source.get("default", "")
        return cls.of_template(source)


@dataclass(frozen=True)
class Conversation:
    """One sequence an example trains on; assistant turns at index >= ``train_from`` carry loss."""

    messages: list[dict]
    tools: list[dict] | None = None
    train_from: int = 0


def text_content(content: Any, where: str) -> str:
    """Content as plain text: strings as is, the text parts of a list joined, images left out."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") in ("image_url", "image"):
                continue
            else:
                raise RenderError(f"{where}: unknown content part")
        return "".join(texts)
    raise RenderError(f"{where}: content must be a string")


def _tool_call_json(call: dict, where: str) -> dict:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not function.get("name"):
        raise RenderError(f"{where}: tool call without function.name")
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise RenderError(f"{where}: function.arguments is not valid JSON ({exc.msg})") from None
    return {"name": function["name"], "arguments": arguments}


def tools_system_text(tools: list[dict]) -> str:
    """How tools are described to a model whose template has no tool support."""
    listing = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return (
        "You may call one or more functions to assist with the user query. "
        "The available functions are:\n<tools>\n"
        f"{listing}\n</tools>\n"
        "To call a function, answer with one block per call:\n"
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )


def prepare_messages(
    messages: list[dict], tools: list[dict] | None, caps: TemplateCaps
) -> tuple[list[dict], list[dict] | None]:
    """Normalise messages for the template: plain-text contents, reasoning and tool calls
    folded into the text when the template does not handle them. Returns (messages, tools
    to pass to the template or None)."""
    if not isinstance(messages, list) or not messages:
        raise RenderError("messages must be a non-empty list")
    out: list[dict] = []
    for index, message in enumerate(messages, 1):
        where = f"message {index}"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RenderError(f"{where}: each message needs a role")
        role = message["role"]
        if role not in ("system", "user", "assistant", "tool"):
            raise RenderError(f"{where}: unknown role {role!r}")
        content = text_content(message.get("content"), where)
        new: dict[str, Any] = {"role": role, "content": content}
        if role == "assistant":
            reasoning = next((message[k] for k in REASONING_FIELDS if message.get(k)), None)
            if reasoning:
                if caps.reasoning_field:
                    new[caps.reasoning_field] = str(reasoning)
                else:
                    new["content"] = f"<think>\n{str(reasoning).strip()}\n</think>\n\n{content}"
            calls = message.get("tool_calls") or []
            if calls:
                if not isinstance(calls, list):
                    raise RenderError(f"{where}: tool_calls must be a list")
                parsed = [_tool_call_json(call, where) for call in calls]
                if caps.tool_calls:
                    new["tool_calls"] = [
                        {"type": "function", "id": call.get("id"), "function": fn}
                        for call, fn in zip(calls, parsed, strict=True)
                    ]
                else:
                    blocks = "\n".join(
                        f"<tool_call>\n{json.dumps(fn, ensure_ascii=False)}\n</tool_call>" for fn in parsed
                    )
                    new["content"] = f"{new['content']}\n{blocks}" if new["content"] else blocks
        elif role == "tool":
            if caps.tool_calls:
                if message.get("tool_call_id"):
                    new["tool_call_id"] = message["tool_call_id"]
            else:
                new["content"] = f"<tool_response>\n{content}\n</tool_response>"
        out.append(new)
    if tools:
        if not isinstance(tools, list):
            raise RenderError("tools must be a list")
        if caps.tools:
            return out, tools
        description = tools_system_text(tools)
        if out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{description}".strip()}
        else:
            out.insert(0, {"role": "system", "content": description})
    return out, None


def sft_conversation(example: dict) -> Conversation:
    """The conversation of an SFT example (chat, function call, deep thinking, legacy input/target)."""
    if not isinstance(example, dict):
        raise RenderError("an example must be a JSON object")
    if "preferred_output" in example:
        raise RenderError("a preference (DPO) example cannot be used for SFT")
    if "messages" in example:
        return Conversation(example["messages"], example.get("tools"))
    if "input" in example and "target" in example and isinstance(example["input"], str):
        return Conversation(
            [
                {"role": "user", "content": example["input"]},
                {"role": "assistant", "content": text_content(example["target"], "target")},
            ]
        )
    raise RenderError('an example needs "messages" (or legacy "input" and "target")')


def dpo_conversations(example: dict) -> tuple[Conversation, Conversation]:
    """Chosen and rejected: prompt + preferred / non-preferred output; loss on the outputs only.

    Takes the file's form (``input.messages``) and the validator's normalized form (``messages``)."""
    if not isinstance(example, dict) or "preferred_output" not in example:
        raise RenderError('a DPO example needs "input", "preferred_output" and "non_preferred_output"')
    source = example.get("input")
    if isinstance(source, str):
        prompt, tools = [{"role": "user", "content": source}], example.get("tools")
    elif isinstance(source, dict) and isinstance(source.get("messages"), list):
        prompt, tools = source["messages"], source.get("tools") or example.get("tools")
    elif isinstance(example.get("messages"), list):
        prompt, tools = example["messages"], example.get("tools")
    else:
        raise RenderError('"input" must hold "messages"')
    pair = []
    for key in ("preferred_output", "non_preferred_output"):
        output = example.get(key)
        if isinstance(output, dict):
            output = [output]
        if not isinstance(output, list) or not output:
            raise RenderError(f'"{key}" must be a non-empty list of assistant messages')
        pair.append(Conversation(list(prompt) + list(output), tools, train_from=len(prompt)))
    return pair[0], pair[1]


def example_conversations(example: dict) -> list[Conversation]:
    """The conversations one example trains on: one for SFT, two (chosen, rejected) for DPO."""
    if isinstance(example, dict) and "preferred_output" in example:
        return list(dpo_conversations(example))
    return [sft_conversation(example)]


def prepared_conversations(example: dict, *, chat_template: str | None) -> list[tuple[list[dict], list | None]]:
    """(messages, tools) ready for ``chat_template``, per conversation of the example."""
    caps = TemplateCaps.of_template(chat_template)
    return [prepare_messages(c.messages, c.tools, caps) for c in example_conversations(example)]


def stop_token_strings(folder, eos_token: str | None, id_to_token) -> frozenset[str]:
    """The tokens that end an assistant turn: the tokenizer's eos plus generation_config's eos ids.

    GLM-4, for one, ends a turn with the next role's token (``<|user|>``, ``<|observation|>``) or
    ``<|endoftext|>``, all listed in its generation_config.json."""
    from pathlib import Path

    stops = {eos_token} if eos_token else set()
    path = Path(folder) / "generation_config.json" if folder else None
    if path is not None and path.is_file():
        try:
            ids = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
        except ValueError:
            ids = None
        for token_id in ids if isinstance(ids, list) else [ids] if isinstance(ids, int) else []:
            token = id_to_token(token_id)
            if token:
                stops.add(token)
    return frozenset(stops)


def needs_final_stop(rendered: str, stops: frozenset[str]) -> bool:
    """Whether a rendered conversation ends without an end-of-turn token, so training appends one
    (the model must learn to stop) and billing counts it. Templates of the ChatML kind end each turn
    with one; GLM-4's renders nothing after the last assistant turn."""
    tail = rendered.rstrip()
    return bool(stops) and not any(tail.endswith(stop) for stop in stops)
