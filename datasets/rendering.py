"""Turn a normalized example into what a tokenizer's chat template can render.

Token counts and training must render an example the same way, so both use
``example_conversations``. Templates differ in what they understand: the
embedded default's ChatML template knows only ``role`` and string ``content``.
Where a template does not read ``tool_calls``, ``tools`` or reasoning, they are
written into the text in the common Hermes/Qwen style, so their tokens are
still counted and trained on:

* reasoning: ``<think>\\n...\\n</think>\\n\\n`` before the assistant's content;
* tool calls: ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``
  after the assistant's content;
* tools: a system message (or the end of the existing one) listing the
  function schemas as JSON.

Image parts are dropped from the text (images are counted apart: 1,024 or
1,600 tokens each by the platform's billing rules).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")


@lru_cache(maxsize=16)
def template_features(chat_template: str) -> tuple[bool, bool, bool]:
    """(reads tool_calls, reads tools, reads reasoning) for a template source."""
    return (
        "tool_calls" in chat_template,
        "tools" in chat_template.replace("tool_calls", ""),
        any(field in chat_template for field in REASONING_FIELDS),
    )


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return str(content)


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def template_messages(
    messages: list[dict], tools: list | None, *, chat_template: str
) -> tuple[list[dict], list | None]:
    """Messages with string contents (and tools) ready for ``chat_template``."""
    reads_calls, reads_tools, reads_reasoning = template_features(chat_template)
    out: list[dict] = []
    for message in messages:
        role = message.get("role")
        content = _text_of(message.get("content"))
        item: dict[str, Any] = {"role": role}
        reasoning = message.get("reasoning_content")
        if reasoning:
            if reads_reasoning:
                item["reasoning_content"] = reasoning
            else:
                content = f"<think>\n{reasoning}\n</think>\n\n{content}"
        calls = message.get("tool_calls") or []
        if calls:
            if reads_calls:
                item["tool_calls"] = [
                    {
                        "id": call.get("id"),
                        "type": "function",
                        "function": {
                            "name": call["function"]["name"],
                            "arguments": _arguments(call["function"].get("arguments")),
                        },
                    }
                    for call in calls
                ]
            else:
                rendered = "\n".join(
                    "<tool_call>\n"
                    + json.dumps(
                        {"name": call["function"]["name"], "arguments": _arguments(call["function"].get("arguments"))},
                        ensure_ascii=False,
                    )
                    + "\n</tool_call>"
                    for call in calls
                )
                content = f"{content}\n{rendered}" if content else rendered
        if role == "tool" and reads_calls and message.get("tool_call_id"):
            item["tool_call_id"] = message["tool_call_id"]
        item["content"] = content
        out.append(item)
    if tools and not reads_tools:
        listing = "You can call these functions:\n" + json.dumps(tools, ensure_ascii=False)
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{listing}"}
        else:
            out.insert(0, {"role": "system", "content": listing})
        tools = None
    return out, (tools or None)


def example_conversations(example: dict, *, chat_template: str) -> list[tuple[list[dict], list | None]]:
    """The conversations one example trains on: one for SFT, two (chosen, rejected) for DPO."""
    tools = example.get("tools")
    if "preferred_output" in example:
        prompt = list(example["messages"])
        return [
            template_messages(prompt + list(example["preferred_output"]), tools, chat_template=chat_template),
            template_messages(prompt + list(example["non_preferred_output"]), tools, chat_template=chat_template),
        ]
    return [template_messages(example["messages"], tools, chat_template=chat_template)]
