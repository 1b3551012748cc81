"""Turn dataset examples into token ids and a loss mask with the base model's chat template.

How an example becomes training text (documented here because serving must render
prompts the same way):

* Chat ``{"messages": [...]}`` is rendered with the tokenizer's chat template as is
  (a template that adds a default system prompt when none is given does so).
* Legacy ``{"input": ..., "target": ...}`` becomes ``user: input`` / ``assistant: target``.
* ``reasoning_content`` of an assistant turn: passed to the template when the template
  knows the field; otherwise written into the content as
  ``<think>\\n{reasoning}\\n</think>\\n\\n{content}``.
* ``tool_calls`` of an assistant turn: passed to the template when it knows them;
  otherwise appended to the content, one block per call:
  ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`` (Hermes/Qwen style,
  arguments parsed from their JSON string).
* ``tool`` turns: passed as role ``tool`` when the template handles tools; otherwise
  their content is wrapped as ``<tool_response>\\n...\\n</tool_response>`` under role ``tool``.
* Top-level ``tools``: passed as ``tools=`` when the template uses them; otherwise
  described in the system message (``<tools>`` JSON block plus how to call one).

Loss mask: only the tokens of assistant turns (their content, reasoning, tool calls
and the template's end-of-turn token) carry labels. The span of assistant turn *i* is
found by rendering the conversation up to turn *i* with ``add_generation_prompt=True``
(where the assistant's text starts) and up to and including turn *i* (where it ends);
tokens are matched to spans through the fast tokenizer's character offsets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

IGNORE = -100


class RenderError(ValueError):
    """An example cannot be rendered (the message says why)."""


@dataclass
class Encoded:
    """One tokenized sequence: ids, and a parallel boolean mask of the tokens that carry loss."""

    input_ids: list[int]
    loss_mask: list[bool]
    truncated: bool = False

    @property
    def n_labels(self) -> int:
        return sum(self.loss_mask)


@dataclass
class EncodedPair:
    """A DPO example: the chosen and rejected sequences share their prompt."""

    chosen: Encoded
    rejected: Encoded
    truncated: bool = False


@dataclass
class TemplateCaps:
    """What the chat template knows natively (checked by looking at its source)."""

    tools: bool = False
    tool_calls: bool = False
    reasoning: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, tokenizer) -> TemplateCaps:
        source = tokenizer.chat_template or ""
        if isinstance(source, dict):  # several named templates: the default one is used
            source = source.get("default", "")
        return cls(
            tools="tools" in source,
            tool_calls="tool_calls" in source,
            reasoning="reasoning_content" in source,
        )


def _text_content(content: Any, where: str) -> str:
    """Content as plain text: strings as is, lists of text parts joined."""
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
            else:
                raise RenderError(f"{where}: only text content can be trained on a text model")
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
        content = _text_content(message.get("content"), where)
        new: dict[str, Any] = {"role": role, "content": content}
        if role == "assistant":
            reasoning = message.get("reasoning_content")
            if reasoning:
                if caps.reasoning:
                    new["reasoning_content"] = str(reasoning)
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


def example_messages(example: dict) -> tuple[list[dict], list[dict] | None]:
    """The chat messages and tools of an SFT example (chat, function call, deep thinking, legacy)."""
    if not isinstance(example, dict):
        raise RenderError("an example must be a JSON object")
    if "messages" in example:
        return example["messages"], example.get("tools")
    if "input" in example and "target" in example and isinstance(example["input"], str):
        return [
            {"role": "user", "content": example["input"]},
            {"role": "assistant", "content": _text_content(example["target"], "target")},
        ], None
    if "preferred_output" in example:
        raise RenderError("a preference (DPO) example cannot be used for SFT")
    raise RenderError('an example needs "messages" (or legacy "input" and "target")')


class Renderer:
    """Encodes examples for one tokenizer; ``max_seq_len`` truncates from the end."""

    def __init__(self, tokenizer, max_seq_len: int):
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError("a fast tokenizer (with character offsets) is needed")
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        self.caps = TemplateCaps.of(tokenizer)

    def _render(self, messages: list[dict], tools: list[dict] | None, generation_prompt: bool) -> str:
        kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": generation_prompt}
        if tools:
            kwargs["tools"] = tools
        try:
            return self.tokenizer.apply_chat_template(messages, **kwargs)
        except Exception as exc:  # template errors (jinja raise_exception) carry the reason
            raise RenderError(f"the chat template refused the conversation: {exc}") from None

    def encode_conversation(
        self, messages: list[dict], tools: list[dict] | None = None, train_from: int = 0
    ) -> Encoded:
        """Tokenize a conversation; assistant turns at index >= ``train_from`` carry loss."""
        original_count = len(messages) if isinstance(messages, list) else 0
        messages, template_tools = prepare_messages(messages, tools, self.caps)
        shift = len(messages) - original_count  # a system message describing tools may have been added
        full = self._render(messages, template_tools, False)
        spans: list[tuple[int, int]] = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant" or i - shift < train_from:
                continue
            start_text = self._render(messages[:i], template_tools, True) if i else ""
            end_text = self._render(messages[: i + 1], template_tools, False)
            if not full.startswith(start_text) or not full.startswith(end_text) or len(end_text) <= len(start_text):
                # The template rewrites earlier turns (e.g. drops old reasoning): only the
                # last assistant turn can be located reliably.
                if i != len(messages) - 1:
                    continue
                start_text = self._render(messages[:i], template_tools, True)
                if not full.startswith(start_text):
                    raise RenderError("the chat template does not render the conversation incrementally")
                end_text = full
            end = len(end_text.rstrip())  # the newline after end-of-turn is never generated
            spans.append((len(start_text), end))
        if not spans:
            raise RenderError("the example has no assistant turn to learn from")
        encoding = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = encoding["input_ids"]
        mask = [False] * len(ids)
        span_index = 0
        for t, (a, b) in enumerate(encoding["offset_mapping"]):
            while span_index < len(spans) and a >= spans[span_index][1]:
                span_index += 1
            if span_index == len(spans):
                break
            start, end = spans[span_index]
            if a >= start and b <= end and b > a:
                mask[t] = True
        truncated = len(ids) > self.max_seq_len
        if truncated:
            ids, mask = ids[: self.max_seq_len], mask[: self.max_seq_len]
        return Encoded(ids, mask, truncated)

    def encode_sft(self, example: dict) -> Encoded:
        messages, tools = example_messages(example)
        return self.encode_conversation(messages, tools)

    def encode_dpo(self, example: dict) -> EncodedPair:
        """Chosen and rejected: prompt + preferred / non-preferred output; loss on the outputs."""
        if not isinstance(example, dict) or "preferred_output" not in example:
            raise RenderError('a DPO example needs "input", "preferred_output" and "non_preferred_output"')
        source = example.get("input")
        if isinstance(source, str):
            prompt = [{"role": "user", "content": source}]
            tools = None
        elif isinstance(source, dict) and isinstance(source.get("messages"), list):
            prompt, tools = source["messages"], source.get("tools") or example.get("tools")
        else:
            raise RenderError('"input" must hold "messages"')
        pair = []
        for key in ("preferred_output", "non_preferred_output"):
            output = example.get(key)
            if isinstance(output, dict):
                output = [output]
            if not isinstance(output, list) or not output:
                raise RenderError(f'"{key}" must be a non-empty list of assistant messages')
            pair.append(self.encode_conversation(list(prompt) + list(output), tools, train_from=len(prompt)))
        chosen, rejected = pair
        return EncodedPair(chosen, rejected, chosen.truncated or rejected.truncated)
