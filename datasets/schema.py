"""The data formats, one JSON object (one example) at a time.

``check_example`` checks what a trainer would choke on and returns the example
in its normalized form (see ``normalize``); problems are appended to a list as
``(json path, code, message)``. A message is a ``datasets.messages.Message``: its
English template and parameters, translated when it is shown, so a stored problem
reads in the reader's language (``_`` below is that module's, not Django's).

Normalized example (what ``dataset_iter_examples`` yields):

* chat, function call, deep thinking, image generation, image understanding:
  ``{"messages": [...], "tools": [...]}`` (``tools`` only where the line has it);
  legacy ``{"input", "target"}`` lines become
  ``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}``.
* DPO: ``{"messages": [...prompt...], "preferred_output": [...],
  "non_preferred_output": [...]}`` (``tools`` where the line has it).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from .messages import Message, _
from .models import Category

Problems = list[tuple[str, str, Message]]

TEXT_CATEGORIES = {Category.CHAT, Category.FUNCTION_CALL, Category.REASONING}
IMAGE_CATEGORIES = {Category.IMAGE_GENERATION, Category.IMAGE_UNDERSTANDING}
ROLES = ("system", "user", "assistant", "tool")
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
JSON_SCHEMA_TYPES = {"object", "string", "number", "integer", "boolean", "array", "null"}
DATA_URL = re.compile(r"^data:([^;,]*)((?:;[^;,]*)*),", re.IGNORECASE)
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Image tokens per the platform's billing rules.
IMAGE_TOKENS = {Category.IMAGE_GENERATION: 1024, Category.IMAGE_UNDERSTANDING: 1600}


# Python's json error texts, each with our own words (never Python's text on a page).
JSON_ERRORS = (
    (
        "Expecting value",
        _("a value was expected here (text in double quotes, a number, true, false, null, an object or a list)"),
    ),
    ("Expecting property name", _("a key in double quotes was expected (no trailing comma, no single quotes)")),
    ("Expecting ',' delimiter", _("a comma was expected between two items")),
    ("Expecting ':' delimiter", _("a colon was expected after the key")),
    ("Unterminated string", _("a text in double quotes is not closed")),
    ("Invalid control character", _("a text holds a raw tab or line break; write it as \\t or \\n")),
    ("Invalid \\uXXXX escape", _("a \\u escape needs four hexadecimal digits")),
    ("Invalid \\escape", _("a backslash starts an escape that JSON does not have")),
    ("Extra data", _("there is more after the end of the JSON value")),
)


def json_error_reason(exc: ValueError) -> Message:
    """What is wrong, in our words, for a ``json.JSONDecodeError`` (its position is on the exception)."""
    text = getattr(exc, "msg", str(exc))
    for start, reason in JSON_ERRORS:
        if text.startswith(start):
            return reason
    return _("the text is not valid JSON")


def type_name(value: Any) -> Message | str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return _("a boolean")
    if isinstance(value, int | float):
        return _("a number")
    if isinstance(value, str):
        return _("a string")
    if isinstance(value, list):
        return _("a list")
    if isinstance(value, dict):
        return _("an object")
    return type(value).__name__


# --- detection ----------------------------------------------------------------


def detect_category(obj: Any) -> str | None:
    """The most specific category one parsed line looks like, or None."""
    if not isinstance(obj, dict):
        return None
    if "preferred_output" in obj or "non_preferred_output" in obj:
        return Category.DPO
    if "input" in obj and "target" in obj and "messages" not in obj:
        return Category.CHAT
    messages = obj.get("messages")
    if not isinstance(messages, list):
        return None
    found = Category.CHAT
    if obj.get("tools"):
        found = Category.FUNCTION_CALL
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list) and any(
            isinstance(part, dict) and part.get("type") == "image_url" for part in content
        ):
            return Category.IMAGE_GENERATION if message.get("role") == "assistant" else Category.IMAGE_UNDERSTANDING
        if message.get("tool_calls") or message.get("role") == "tool":
            found = Category.FUNCTION_CALL
        elif message.get("reasoning_content") and found == Category.CHAT:
            found = Category.REASONING
    return found


# Higher wins when the first lines of a file disagree.
DETECTION_RANK = {
    Category.CHAT: 0,
    Category.REASONING: 1,
    Category.FUNCTION_CALL: 2,
    Category.IMAGE_UNDERSTANDING: 3,
    Category.IMAGE_GENERATION: 4,
    Category.DPO: 5,
}


# --- images -------------------------------------------------------------------


def check_image_url(url: Any, path: str, problems: Problems) -> None:
    """http(s) URLs, or base64 (data URL or bare) that decodes to a JPEG or PNG image."""
    if not isinstance(url, str):
        problems.append((path, "type", _("The image URL must be a string, not %(type)s.") % {"type": type_name(url)}))
        return
    url = url.strip()
    if not url:
        problems.append((path, "empty", _("The image URL is empty.")))
        return
    lowered = url[:12].lower()
    if lowered.startswith(("http://", "https://")):
        host = url.split("://", 1)[1].split("/", 1)[0]
        if not host or any(c.isspace() for c in url):
            problems.append((path, "image_url", _("This is not a valid http(s) URL.")))
        return
    declared = None
    payload = url
    if lowered.startswith("data:"):
        match = DATA_URL.match(url[:200])
        if not match:
            problems.append(
                (
                    path,
                    "data_url",
                    _("The data URL has no comma after its header; write it as data:image/jpeg;base64,<data>."),
                )
            )
            return
        mime, params = match.group(1).strip().lower(), match.group(2).lower()
        if ";base64" not in params:
            problems.append(
                (
                    path,
                    "data_url",
                    _(
                        "The data URL is not base64: its prefix must be "
                        "data:image/jpeg;base64, or data:image/png;base64,."
                    ),
                )
            )
            return
        if mime not in ("image/jpeg", "image/jpg", "image/png"):
            problems.append(
                (
                    path,
                    "data_url",
                    _(
                        "The data URL says %(mime)s; only image/jpeg and image/png are accepted "
                        "(prefix data:image/jpeg;base64, or data:image/png;base64,)."
                    )
                    % {"mime": mime or _("no type")},
                )
            )
            return
        declared = "png" if mime == "image/png" else "jpeg"
        payload = url[match.end() :]
    elif "://" in url[:16]:
        problems.append((path, "image_url", _("Only http:// and https:// image URLs are accepted.")))
        return
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        try:  # base64 with line breaks or URL-safe characters is still base64
            data = base64.urlsafe_b64decode(re.sub(r"\s+", "", payload) + "=" * (-len(payload) % 4))
        except (binascii.Error, ValueError):
            problems.append((path, "base64", _("This is neither an http(s) URL nor valid base64 image data.")))
            return
    if data.startswith(JPEG_MAGIC):
        actual = "jpeg"
    elif data.startswith(PNG_MAGIC):
        actual = "png"
    else:
        problems.append(
            (
                path,
                "not_image",
                _("The base64 data decodes to %(size)s bytes that are not a JPEG or PNG image.") % {"size": len(data)},
            )
        )
        return
    if declared and declared != actual:
        problems.append(
            (
                path,
                "data_url",
                _("The data URL says image/%(declared)s but the data is a %(actual)s image; fix the prefix.")
                % {"declared": declared, "actual": actual.upper()},
            )
        )


def _content_parts(content: list, path: str, problems: Problems, *, allow_images: bool) -> tuple[int, bool]:
    """Check a list of content parts; return (images, has text)."""
    images = 0
    has_text = False
    if not content:
        problems.append((path, "empty", _("The content list is empty.")))
    for i, part in enumerate(content):
        ppath = f"{path}[{i}]"
        if not isinstance(part, dict):
            problems.append(
                (ppath, "type", _("A content part must be an object, not %(type)s.") % {"type": type_name(part)})
            )
            continue
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                problems.append(
                    (f"{ppath}.text", "type", _("The text must be a string, not %(type)s.") % {"type": type_name(text)})
                )
            elif text.strip():
                has_text = True
        elif kind == "image_url":
            if not allow_images:
                problems.append(
                    (
                        ppath,
                        "category",
                        _("Images are not part of this category; choose image generation or image understanding."),
                    )
                )
                continue
            image_url = part.get("image_url")
            if not isinstance(image_url, dict):
                problems.append(
                    (
                        f"{ppath}.image_url",
                        "type",
                        _('image_url must be an object like {"url": "..."}, not %(type)s.')
                        % {"type": type_name(image_url)},
                    )
                )
                continue
            check_image_url(image_url.get("url"), f"{ppath}.image_url.url", problems)
            images += 1
        else:
            problems.append(
                (
                    f"{ppath}.type",
                    "part_type",
                    _('The part type must be "text" or "image_url", not %(value)s.')
                    % {"value": json.dumps(kind, ensure_ascii=False)},
                )
            )
    return images, has_text


# --- tools --------------------------------------------------------------------


def check_tools(tools: Any, problems: Problems) -> set[str]:
    """``tools`` must be a list of JSON-schema functions; return their names."""
    names: set[str] = set()
    if not isinstance(tools, list):
        problems.append(("tools", "type", _("tools must be a list, not %(type)s.") % {"type": type_name(tools)}))
        return names
    for i, tool in enumerate(tools):
        path = f"tools[{i}]"
        if not isinstance(tool, dict):
            problems.append((path, "type", _("A tool must be an object, not %(type)s.") % {"type": type_name(tool)}))
            continue
        if tool.get("type", "function") != "function":
            problems.append((f"{path}.type", "tool_type", _('The tool type must be "function".')))
        function = tool.get("function")
        if not isinstance(function, dict):
            problems.append(
                (f"{path}.function", "type", _("function must be an object with name, description and parameters."))
            )
            continue
        name = function.get("name")
        if not isinstance(name, str) or not FUNCTION_NAME.match(name):
            problems.append(
                (
                    f"{path}.function.name",
                    "function_name",
                    _("The function name must be 1 to 64 letters, digits, _, . or -."),
                )
            )
        elif name in names:
            problems.append(
                (
                    f"{path}.function.name",
                    "duplicate_tool",
                    _("The function %(name)s is defined twice.") % {"name": name},
                )
            )
        else:
            names.add(name)
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            problems.append((f"{path}.function.description", "type", _("The description must be a string.")))
        if "parameters" in function:
            _check_schema(function["parameters"], f"{path}.function.parameters", problems, top=True)
    return names


def _check_schema(schema: Any, path: str, problems: Problems, *, top: bool = False) -> None:
    if not isinstance(schema, dict):
        problems.append(
            (path, "schema", _("A JSON schema must be an object, not %(type)s.") % {"type": type_name(schema)})
        )
        return
    kind = schema.get("type")
    if top and kind != "object":
        problems.append((f"{path}.type", "schema", _('The parameters schema must have "type": "object".')))
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        bad = [k for k in kinds if k not in JSON_SCHEMA_TYPES]
        if bad:
            problems.append(
                (
                    f"{path}.type",
                    "schema",
                    _("%(value)s is not a JSON schema type.") % {"value": json.dumps(bad[0], ensure_ascii=False)},
                )
            )
    properties = schema.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            problems.append((f"{path}.properties", "schema", _("properties must be an object.")))
            properties = None
        else:
            for key, sub in properties.items():
                _check_schema(sub, f"{path}.properties.{key}", problems)
    required = schema.get("required")
    if required is not None:
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            problems.append((f"{path}.required", "schema", _("required must be a list of property names.")))
        elif properties is not None:
            for j, key in enumerate(required):
                if key not in properties:
                    problems.append(
                        (
                            f"{path}.required[{j}]",
                            "schema",
                            _("%(name)s is required but is not among the properties.") % {"name": key},
                        )
                    )
    if isinstance(schema.get("items"), dict):
        _check_schema(schema["items"], f"{path}.items", problems)


def _check_tool_calls(
    calls: Any, path: str, problems: Problems, tool_names: set[str] | None, call_ids: set[str]
) -> None:
    if not isinstance(calls, list) or not calls:
        problems.append((path, "type", _("tool_calls must be a non-empty list.")))
        return
    for i, call in enumerate(calls):
        cpath = f"{path}[{i}]"
        if not isinstance(call, dict):
            problems.append(
                (cpath, "type", _("A tool call must be an object, not %(type)s.") % {"type": type_name(call)})
            )
            continue
        if call.get("type", "function") != "function":
            problems.append((f"{cpath}.type", "tool_type", _('The tool call type must be "function".')))
        call_id = call.get("id")
        if call_id is not None:
            if not isinstance(call_id, str) or not call_id.strip():
                problems.append((f"{cpath}.id", "type", _("The tool call id must be a non-empty string.")))
            else:
                call_ids.add(call_id)
        function = call.get("function")
        if not isinstance(function, dict):
            problems.append((f"{cpath}.function", "type", _("function must be an object with name and arguments.")))
            continue
        name = function.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append((f"{cpath}.function.name", "required", _("The called function needs a name.")))
        elif tool_names is not None and name not in tool_names:
            problems.append(
                (
                    f"{cpath}.function.name",
                    "unknown_function",
                    _("The function %(name)s is not defined in tools.") % {"name": name},
                )
            )
        arguments = function.get("arguments")
        apath = f"{cpath}.function.arguments"
        if isinstance(arguments, dict | list):
            problems.append(
                (
                    apath,
                    "arguments_type",
                    _('arguments must be a JSON string (like "{\\"city\\": \\"Beijing\\"}"), not %(type)s.')
                    % {"type": type_name(arguments)},
                )
            )
        elif not isinstance(arguments, str):
            problems.append(
                (
                    apath,
                    "arguments_type",
                    _("arguments must be a JSON string, not %(type)s.") % {"type": type_name(arguments)},
                )
            )
        else:
            try:
                parsed = json.loads(arguments)
            except ValueError as exc:
                problems.append(
                    (
                        apath,
                        "arguments_json",
                        _("arguments is not valid JSON at column %(col)s: %(error)s.")
                        % {"col": getattr(exc, "colno", 1), "error": json_error_reason(exc)},
                    )
                )
            else:
                if not isinstance(parsed, dict):
                    problems.append((apath, "arguments_json", _("arguments must encode a JSON object.")))


# --- messages -----------------------------------------------------------------


def check_messages(
    messages: Any,
    path: str,
    problems: Problems,
    *,
    category: str,
    tool_names: set[str] | None,
    prompt_only: bool = False,
) -> int:
    """Check a conversation; return how many images it holds."""
    if not isinstance(messages, list):
        problems.append((path, "type", _("messages must be a list, not %(type)s.") % {"type": type_name(messages)}))
        return 0
    if not messages:
        problems.append((path, "empty", _("messages is empty.")))
        return 0
    allow_tools = category in (Category.FUNCTION_CALL, Category.REASONING, Category.DPO)
    allow_reasoning = category in (Category.REASONING, Category.FUNCTION_CALL, Category.DPO)
    images = 0
    user_turns = assistant_turns = unweighted_turns = 0
    call_ids: set[str] = set()
    previous_role = None
    last_role = None
    unknown_roles = False  # after a bad role, order checks would only repeat the same problem
    for i, message in enumerate(messages):
        mpath = f"{path}[{i}]"
        if not isinstance(message, dict):
            problems.append(
                (mpath, "type", _("A message must be an object, not %(type)s.") % {"type": type_name(message)})
            )
            continue
        role = message.get("role")
        if role not in ROLES:
            if role is None:
                problems.append((f"{mpath}.role", "required", _("The message has no role.")))
            else:
                problems.append(
                    (
                        f"{mpath}.role",
                        "unknown_role",
                        _("Unknown role %(role)s: use system, user, assistant or tool.")
                        % {"role": json.dumps(role, ensure_ascii=False)},
                    )
                )
            previous_role = "?"
            unknown_roles = True
            continue
        last_role = role
        content = message.get("content")
        cpath = f"{mpath}.content"
        if "weight" in message and role != "assistant":
            problems.append(
                (f"{mpath}.weight", "weight", _("weight applies to assistant turns only (0: not learnt, 1: learnt)."))
            )
        if role == "system":
            if i != 0:
                problems.append((f"{mpath}.role", "order", _("A system message may only come first.")))
            if isinstance(content, list):  # text parts, as OpenAI's chat format allows
                _content_parts(content, cpath, problems, allow_images=False)
            else:
                _text_content(content, cpath, problems, role)
        elif role == "user":
            user_turns += 1
            if isinstance(content, list):
                n, has_text = _content_parts(
                    content, cpath, problems, allow_images=category == Category.IMAGE_UNDERSTANDING
                )
                images += n
            else:
                _text_content(content, cpath, problems, role)
        elif role == "assistant":
            assistant_turns += 1
            if _check_weight(message, mpath, problems) == 0:
                unweighted_turns += 1
            if user_turns == 0 and not unknown_roles:
                problems.append(
                    (
                        f"{mpath}.role",
                        "order",
                        _("The conversation must start with a user turn (after an optional system message)."),
                    )
                )
            calls = message.get("tool_calls")
            if calls is not None and not (isinstance(calls, list) and not calls):
                if not allow_tools:
                    problems.append(
                        (
                            f"{mpath}.tool_calls",
                            "category",
                            _("tool_calls are not part of chat data; choose the function call category."),
                        )
                    )
                else:
                    _check_tool_calls(calls, f"{mpath}.tool_calls", problems, tool_names, call_ids)
            reasoning = message.get("reasoning_content")
            if reasoning is not None:
                if not allow_reasoning:
                    problems.append(
                        (
                            f"{mpath}.reasoning_content",
                            "category",
                            _("reasoning_content is not part of this category; choose deep thinking."),
                        )
                    )
                elif not isinstance(reasoning, str):
                    problems.append(
                        (
                            f"{mpath}.reasoning_content",
                            "type",
                            _("reasoning_content must be a string, not %(type)s.") % {"type": type_name(reasoning)},
                        )
                    )
            if isinstance(content, list):
                n, has_text = _content_parts(
                    content, cpath, problems, allow_images=category == Category.IMAGE_GENERATION
                )
                images += n
            elif calls and content in (None, ""):
                pass  # a turn that only calls tools
            else:
                _text_content(content, cpath, problems, role)
        else:  # tool
            if not allow_tools:
                problems.append(
                    (
                        f"{mpath}.role",
                        "category",
                        _("tool turns are not part of chat data; choose the function call category."),
                    )
                )
                continue
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id.strip():
                problems.append(
                    (
                        f"{mpath}.tool_call_id",
                        "required",
                        _("A tool turn needs the tool_call_id of the call it answers."),
                    )
                )
            elif call_id not in call_ids:
                problems.append(
                    (
                        f"{mpath}.tool_call_id",
                        "unknown_call",
                        _("tool_call_id %(id)s does not answer any earlier tool call.")
                        % {"id": json.dumps(call_id, ensure_ascii=False)},
                    )
                )
            if previous_role not in ("assistant", "tool"):
                problems.append(
                    (f"{mpath}.role", "order", _("A tool turn must follow the assistant turn that called it."))
                )
            if not isinstance(content, str):
                problems.append(
                    (cpath, "type", _("The tool result must be a string, not %(type)s.") % {"type": type_name(content)})
                )
        previous_role = role
    if unknown_roles:
        return images
    if user_turns == 0:
        problems.append((path, "no_user", _("The conversation has no user turn.")))
    if prompt_only:
        if assistant_turns and last_role == "assistant":
            problems.append((path, "order", _("The prompt must end with a user turn; the outputs follow it.")))
    elif assistant_turns == 0:
        problems.append((path, "no_assistant", _("The conversation has no assistant turn to learn from.")))
    elif unweighted_turns == assistant_turns:
        problems.append(
            (
                path,
                "no_assistant",
                _("Every assistant turn has weight 0, so there is nothing to learn from; give at least one weight 1."),
            )
        )
    elif last_role not in ("assistant",) and category != Category.FUNCTION_CALL:
        problems.append((f"{path}[{len(messages) - 1}]", "order", _("The last turn must be the assistant's.")))
    return images


def _check_weight(message: dict, path: str, problems: Problems) -> int:
    """An assistant turn's ``weight`` (OpenAI's chat format): 1 (the default) learns it, 0 keeps it as context
    only. Returns the weight (1 when it is missing or wrong)."""
    if "weight" not in message:
        return 1
    weight = message["weight"]
    if isinstance(weight, bool) or weight not in (0, 1):
        problems.append(
            (
                f"{path}.weight",
                "weight",
                _("weight must be 0 (not learnt) or 1 (learnt), not %(value)s.")
                % {"value": json.dumps(weight, ensure_ascii=False)[:40]},
            )
        )
        return 1
    return int(weight)


def _text_content(content: Any, path: str, problems: Problems, role: str) -> None:
    if content is None:
        problems.append((path, "required", _("The %(role)s message has no content.") % {"role": role}))
    elif not isinstance(content, str):
        problems.append((path, "type", _("content must be a string, not %(type)s.") % {"type": type_name(content)}))
    elif not content.strip():
        problems.append((path, "empty", _("The %(role)s message's content is empty.") % {"role": role}))


def _check_outputs(value: Any, path: str, problems: Problems) -> None:
    if not isinstance(value, list) or not value:
        problems.append(
            (path, "required", _("%(field)s must be a non-empty list of assistant messages.") % {"field": path})
        )
        return
    for i, message in enumerate(value):
        mpath = f"{path}[{i}]"
        if not isinstance(message, dict):
            problems.append(
                (mpath, "type", _("A message must be an object, not %(type)s.") % {"type": type_name(message)})
            )
            continue
        if message.get("role") != "assistant":
            problems.append((f"{mpath}.role", "unknown_role", _('An output message must have role "assistant".')))
        _text_content(message.get("content"), f"{mpath}.content", problems, "assistant")


# --- one example --------------------------------------------------------------


def check_example(obj: Any, category: str, problems: Problems) -> tuple[dict | None, int]:
    """Check one parsed line; return (normalized example or None, images)."""
    if not isinstance(obj, dict):
        if isinstance(obj, list):
            problems.append(
                (
                    "",
                    "not_object",
                    _("This line is a JSON list; each line must be one JSON object (one example), not a list of them."),
                )
            )
        else:
            problems.append(
                ("", "not_object", _("Each line must be a JSON object, not %(type)s.") % {"type": type_name(obj)})
            )
        return None, 0
    start = len(problems)
    if category == Category.DPO:
        example, images = _check_dpo(obj, problems)
    elif "messages" not in obj and ("input" in obj or "target" in obj):
        example, images = _check_legacy(obj, category, problems), 0
    else:
        example, images = _check_conversation(obj, category, problems)
    return (example if len(problems) == start else None), images


def _check_conversation(obj: dict, category: str, problems: Problems) -> tuple[dict, int]:
    if "messages" not in obj:
        problems.append(
            (
                "messages",
                "required",
                _('The line has no "messages" list (keys found: %(keys)s).')
                % {"keys": ", ".join(list(obj)[:8]) or _("none")},
            )
        )
        return {}, 0
    tool_names = None
    if "tools" in obj:
        if category not in (Category.FUNCTION_CALL, Category.REASONING):
            problems.append(("tools", "category", _("tools are not part of this category; choose function call.")))
        else:
            tool_names = check_tools(obj["tools"], problems)
    images = check_messages(obj["messages"], "messages", problems, category=category, tool_names=tool_names)
    if category == Category.IMAGE_GENERATION:
        _check_image_generation(obj["messages"], images, problems)
    elif category == Category.IMAGE_UNDERSTANDING and isinstance(obj["messages"], list):
        if images == 0:
            problems.append(
                ("messages", "no_image", _("An image understanding example needs an image in a user turn."))
            )
        elif images > 1:
            problems.append(
                (
                    "messages",
                    "too_many_images",
                    _("This category takes a single image per example; this one has %(n)s.") % {"n": images},
                )
            )
    example = {"messages": obj["messages"]}
    if "tools" in obj:
        example["tools"] = obj["tools"]
    return example, images


def _check_image_generation(messages: Any, images: int, problems: Problems) -> None:
    if not isinstance(messages, list) or not messages:
        return
    last = messages[-1]
    if isinstance(last, dict) and last.get("role") == "assistant" and not isinstance(last.get("content"), list):
        problems.append(
            (
                f"messages[{len(messages) - 1}].content",
                "no_image",
                _(
                    'The assistant turn must be a list holding one {"type": "image_url", ...} part: '
                    "the generated image."
                ),
            )
        )
    elif images > 1:
        problems.append(
            (
                "messages",
                "too_many_images",
                _("This category takes a single image per example; this one has %(n)s.") % {"n": images},
            )
        )


def _check_legacy(obj: dict, category: str, problems: Problems) -> dict:
    if category not in TEXT_CATEGORIES:
        problems.append(("", "category", _("The legacy input/target form is only accepted for chat data.")))
    for key in ("input", "target"):
        value = obj.get(key)
        if value is None:
            problems.append(
                (key, "required", _("The legacy form needs both input and target; %(key)s is missing.") % {"key": key})
            )
        elif not isinstance(value, str):
            problems.append(
                (key, "type", _("%(key)s must be a string, not %(type)s.") % {"key": key, "type": type_name(value)})
            )
        elif not value.strip():
            problems.append((key, "empty", _("%(key)s is empty.") % {"key": key}))
    return {
        "messages": [{"role": "user", "content": obj.get("input")}, {"role": "assistant", "content": obj.get("target")}]
    }


def _check_dpo(obj: dict, problems: Problems) -> tuple[dict, int]:
    prompt = obj.get("input")
    if not isinstance(prompt, dict) or "messages" not in prompt:
        problems.append(("input", "required", _('A DPO line needs "input": {"messages": [...]} with the prompt.')))
        messages: Any = []
    else:
        messages = prompt["messages"]
        check_messages(messages, "input.messages", problems, category=Category.DPO, tool_names=None, prompt_only=True)
    preferred = obj.get("preferred_output")
    rejected = obj.get("non_preferred_output")
    _check_outputs(preferred, "preferred_output", problems)
    _check_outputs(rejected, "non_preferred_output", problems)
    if isinstance(preferred, list) and isinstance(rejected, list) and preferred and preferred == rejected:
        problems.append(
            (
                "non_preferred_output",
                "identical",
                _("The preferred and non-preferred outputs are identical: the model can learn nothing from them."),
            )
        )
    example = {"messages": messages, "preferred_output": preferred, "non_preferred_output": rejected}
    if isinstance(prompt, dict) and "tools" in prompt:
        example["tools"] = prompt["tools"]
    return example, 0


def count_images(example: dict) -> int:
    total = 0
    messages = list(example.get("messages") or [])
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            total += sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image_url")
    return total
