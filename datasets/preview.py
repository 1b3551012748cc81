"""Turn normalized examples into what the detail page shows as a conversation."""

from __future__ import annotations

import json
from typing import Any

MAX_TEXT = 4000
MAX_INLINE_IMAGE = 2 * 1024 * 1024  # characters of a data URL shown inline


def _image_src(url: Any) -> dict:
    if not isinstance(url, str):
        return {"src": None}
    url = url.strip()
    if url[:8].lower().startswith(("http://", "https:/")):
        return {"src": url, "remote": True}
    if len(url) > MAX_INLINE_IMAGE:
        return {"src": None, "too_large": True}
    if url[:5].lower() == "data:":
        return {"src": url}
    mime = "image/png" if url.startswith("iVBOR") else "image/jpeg"
    return {"src": f"data:{mime};base64,{url}"}


def _text(value: Any) -> tuple[str, bool]:
    text = value if isinstance(value, str) else ("" if value is None else json.dumps(value, ensure_ascii=False))
    if len(text) > MAX_TEXT:
        return text[:MAX_TEXT], True
    return text, False


def _arguments(raw: Any) -> str:
    if isinstance(raw, str):
        try:
            return json.dumps(json.loads(raw), ensure_ascii=False, indent=2)
        except ValueError:
            return raw
    return json.dumps(raw, ensure_ascii=False, indent=2)


def display_message(message: dict) -> dict:
    content = message.get("content")
    texts: list[str] = []
    images: list[dict] = []
    truncated = False
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "text":
                text, cut = _text(part.get("text"))
                texts.append(text)
                truncated = truncated or cut
            elif part.get("type") == "image_url":
                images.append(_image_src((part.get("image_url") or {}).get("url")))
    elif content is not None:
        text, truncated = _text(content)
        texts.append(text)
    reasoning, _cut = _text(message.get("reasoning_content")) if message.get("reasoning_content") else ("", False)
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        calls.append(
            {
                "id": call.get("id", ""),
                "name": function.get("name", ""),
                "arguments": _arguments(function.get("arguments")),
            }
        )
    return {
        "role": message.get("role", ""),
        "text": "\n".join(t for t in texts if t),
        "truncated": truncated,
        "images": images,
        "reasoning": reasoning,
        "tool_calls": calls,
        "tool_call_id": message.get("tool_call_id", ""),
    }


def display_example(line: int, example: dict) -> dict:
    tools = example.get("tools") or []
    item = {
        "line": line,
        "messages": [display_message(m) for m in example.get("messages") or [] if isinstance(m, dict)],
        "tools": [((t.get("function") or {}).get("name") or "?") for t in tools if isinstance(t, dict)],
        "tools_json": json.dumps(tools, ensure_ascii=False, indent=2) if tools else "",
        "dpo": "preferred_output" in example,
    }
    if item["dpo"]:
        item["preferred"] = [display_message(m) for m in example.get("preferred_output") or []]
        item["non_preferred"] = [display_message(m) for m in example.get("non_preferred_output") or []]
    return item
