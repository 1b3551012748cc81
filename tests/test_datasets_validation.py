"""The streaming validator: each sample file, each kind of bad input, warnings, token counts."""

from __future__ import annotations

import base64
import csv
import io
import json

import pytest

from datasets.models import Category
from datasets.rendering import prepared_conversations
from datasets.schema import PNG_MAGIC

from .datasets_support import errors_by_line, run_validator, sample, tokenizer

pytestmark = pytest.mark.django_db


def line(obj) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode()


def chat(user="Hi", assistant="Hello") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


PNG = base64.b64encode(PNG_MAGIC + b"\x00\x00\x00\rIHDR" + b"\x00" * 20).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 20).decode()


@pytest.mark.parametrize(
    ("name", "category", "examples", "images"),
    [
        ("chat.jsonl", Category.CHAT, 13, 0),
        ("function_call.jsonl", Category.FUNCTION_CALL, 6, 0),
        ("reasoning.jsonl", Category.REASONING, 6, 0),
        ("dpo.jsonl", Category.DPO, 6, 0),
        ("image_generation.jsonl", Category.IMAGE_GENERATION, 4, 4),
        ("image_understanding.jsonl", Category.IMAGE_UNDERSTANDING, 4, 4),
        ("legacy_input_target.jsonl", Category.CHAT, 5, 0),
    ],
)
def test_each_sample_is_valid_and_detected(name, category, examples, images):
    tok = tokenizer()
    result, _report = run_validator(sample(name).read_bytes(), tok=tok)
    assert result.errors == [] and result.error_count == 0
    assert result.category == category and result.detected
    assert result.examples == examples and result.images == images
    assert result.valid
    # The samples are small on purpose: the "several hundred examples" advice is a warning, not an error.
    assert [w.code for w in result.warnings] == ["few_examples"]
    assert result.tokens > 0 and result.longest_example_tokens > 0
    # The same file validated with its category chosen explicitly gives the same counts.
    again, _ = run_validator(sample(name).read_bytes(), category=category, tok=tok)
    assert (again.examples, again.tokens) == (result.examples, result.tokens)


def _reference_tokens(path, tok) -> list[int]:
    """Tokens per example the slow, obvious way: apply_chat_template one example at a time."""
    from datasets.schema import check_example

    counts = []
    for raw in path.read_bytes().splitlines():
        if not raw.strip():
            continue
        obj = json.loads(raw)
        problems: list = []
        example, _images = check_example(
            obj,
            Category.DPO
            if "preferred_output" in obj
            else Category.FUNCTION_CALL
            if "tools" in obj
            else Category.REASONING,
            problems,
        )
        assert not problems
        total = 0
        for messages, tools in prepared_conversations(example, chat_template=tok.chat_template):
            total += len(tok.apply_chat_template(messages, tools=tools, tokenize=True)["input_ids"])
        counts.append(total)
    return counts


@pytest.mark.parametrize(
    "name", ["chat.jsonl", "function_call.jsonl", "reasoning.jsonl", "dpo.jsonl", "legacy_input_target.jsonl"]
)
def test_token_counts_match_the_chat_template_tokenized_one_by_one(name):
    tok = tokenizer()
    expected = _reference_tokens(sample(name), tok)
    result, _ = run_validator(sample(name).read_bytes(), tok=tok, batch_size=3)
    assert result.tokens == sum(expected) == result.text_tokens
    assert result.longest_example_tokens == max(expected) or name == "dpo.jsonl"
    # The chat template's own tokens are counted: more than the bare contents.
    bare = sum(
        len(tok(m["content"], add_special_tokens=False)["input_ids"])
        for obj in map(json.loads, sample("chat.jsonl").read_bytes().splitlines())
        for m in obj["messages"]
    )
    if name == "chat.jsonl":
        assert result.tokens > bare


def test_image_billing_rules():
    tok = tokenizer()
    gen, _ = run_validator(sample("image_generation.jsonl").read_bytes(), tok=tok)
    assert gen.tokens == 4 * 1024 and gen.text_tokens > 0
    und, _ = run_validator(sample("image_understanding.jsonl").read_bytes(), tok=tok)
    assert und.tokens == 4 * 1600 + und.text_tokens


def test_broken_file_reports_each_line_with_path_and_message():
    result, report = run_validator(sample("broken_chat.jsonl").read_bytes())
    errors = errors_by_line(result)
    assert sorted(errors) == [3, 4, 5, 7, 8, 9, 11, 12]
    assert "truncated" in errors[3][0][1]
    assert errors[4] == [("messages[0].role", 'Unknown role "bot": use system, user, assistant or tool.')]
    assert errors[5] == [("messages[0].content", "content must be a string, not a number.")]
    assert errors[7][0][0] == "messages" and "no assistant turn" in errors[7][0][1]
    assert errors[8] == [("messages[1].content", "The assistant message's content is empty.")]
    assert "JSON list" in errors[9][0][1]
    assert errors[11] == [("messages", "messages must be a list, not a string.")]
    assert errors[12] == [("messages[1].role", "A system message may only come first.")]
    assert result.examples == 3 and not result.valid
    dup = [w for w in result.warnings if w.code == "duplicate"]
    assert [(w.line, w.message) for w in dup] == [(10, "This line repeats line 1 exactly.")]
    rows = list(csv.reader(io.StringIO(report)))
    assert rows[0] == ["line", "severity", "path", "code", "message"]
    assert len(rows) - 1 == result.error_count + result.warning_count


def test_bom_crlf_and_blank_lines_are_fine():
    data = b"\xef\xbb\xbf" + line(chat()).replace(b"\n", b"\r\n") + b"\r\n   \r\n" + line(chat("a", "b"))
    result, _ = run_validator(data)
    assert result.error_count == 0 and result.examples == 2 and result.lines == 4


def test_json_array_file_gets_one_clear_message():
    data = json.dumps([chat(), chat("x", "y")], indent=2).encode()
    result, _ = run_validator(data)
    assert result.error_count == 1
    assert result.errors[0].line == 1 and "JSON array" in result.errors[0].message
    one_line, _ = run_validator(json.dumps([chat(), chat()]).encode())
    assert one_line.error_count == 1 and "JSON array" in one_line.errors[0].message


def test_pretty_printed_object_gets_one_clear_message():
    result, _ = run_validator(json.dumps(chat(), indent=2).encode())
    assert result.error_count == 1 and "pretty-printed" in result.errors[0].message


def test_truncated_last_line_is_reported():
    data = line(chat()) + b'{"messages": [{"role": "user", "content": "cut he'
    result, _ = run_validator(data)
    assert [(e.line, e.code) for e in result.errors] == [(2, "json")]
    assert "truncated" in result.errors[0].message and result.examples == 1


def test_more_than_one_object_on_a_line():
    result, _ = run_validator(json.dumps(chat()).encode() + b" " + json.dumps(chat()).encode())
    assert "more than one JSON value" in result.errors[0].message


def test_scalar_line_and_missing_messages():
    result, _ = run_validator(b"42\n" + line({"prompt": "x", "completion": "y"}) + line(chat()))
    errors = errors_by_line(result)
    assert errors[1] == [("", "Each line must be a JSON object, not a number.")]
    assert errors[2][0][0] == "messages" and "keys found: prompt, completion" in errors[2][0][1]


def test_empty_and_blank_only_files():
    empty, _ = run_validator(b"")
    assert empty.error_count == 1 and empty.errors[0].code == "no_examples" and not empty.valid
    blank, _ = run_validator(b"\n\r\n   \n")
    assert blank.errors[0].code == "no_examples"


def test_binary_garbage_is_one_error():
    garbage = bytes(range(256)) * 40
    result, _ = run_validator(garbage)
    assert result.error_count == 1 and "binary file" in result.errors[0].message


def test_non_utf8_encoding_names_the_line_and_guesses_gbk():
    data = line(chat()) + json.dumps(chat("你好", "您好"), ensure_ascii=False).encode("gbk") + b"\n"
    result, _ = run_validator(data)
    assert [e.line for e in result.errors] == [2]
    assert "not valid UTF-8" in result.errors[0].message and "GBK" in result.errors[0].message


def test_utf16_file_is_refused_with_the_reason():
    data = ("\ufeff" + json.dumps(chat()) + "\n").encode("utf-16-le")
    result, _ = run_validator(b"\xff\xfe" + data[2:])
    assert result.error_count == 1 and "UTF-16" in result.errors[0].message


def test_wrong_types_and_roles():
    bad = [
        {"messages": [{"role": "user", "content": ["not", "parts"]}, {"role": "assistant", "content": "x"}]},
        {"messages": [{"role": "USER", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]},
        {"messages": []},
        {"messages": [{"role": "assistant", "content": "I speak first"}, {"role": "user", "content": "ok"}]},
    ]
    result, _ = run_validator(b"".join(line(o) for o in bad), category=Category.CHAT)
    errors = errors_by_line(result)
    assert ("messages[0].content[0]", "A content part must be an object, not a string.") in errors[1]
    assert errors[2] == [("messages[0].role", 'Unknown role "USER": use system, user, assistant or tool.')]
    assert errors[3][0] == ("messages[0].role", "The message has no role.")
    assert errors[4] == [("messages", "messages is empty.")]
    assert errors[5][0][0] == "messages[0].role" and "must start with a user turn" in errors[5][0][1]
    assert ("messages[1]", "The last turn must be the assistant's.") in errors[5]


def test_chat_category_refuses_tool_calls_and_reasoning_with_the_category_to_choose():
    obj = {
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "y", "reasoning_content": "because"},
        ]
    }
    result, _ = run_validator(line(obj), category=Category.CHAT)
    assert result.errors[0].path == "messages[1].reasoning_content" and "deep thinking" in result.errors[0].message
    result, _ = run_validator(sample("function_call.jsonl").read_bytes(), category=Category.CHAT)
    assert result.error_count and any("function call category" in e.message for e in result.errors)


def test_function_call_rules():
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]

    def call(arguments, name="get_weather", call_id="c1"):
        return {
            "role": "assistant",
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
        }

    user = {"role": "user", "content": "Weather in Beijing?"}
    done = {"role": "assistant", "content": "Sunny."}
    bad = [
        {
            "messages": [
                user,
                call({"city": "Beijing"}),
                {"role": "tool", "tool_call_id": "c1", "content": "{}"},
                done,
            ],
            "tools": tools,
        },
        {"messages": [user, call("{city: Beijing}"), done], "tools": tools},
        {
            "messages": [
                user,
                call('{"city": "Beijing"}'),
                {"role": "tool", "tool_call_id": "zz", "content": "{}"},
                done,
            ],
            "tools": tools,
        },
        {"messages": [user, call('{"city": "Beijing"}', name="get_time"), done], "tools": tools},
        {
            "messages": [user, done],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "bad name!",
                        "parameters": {"properties": {"a": {"type": "text"}}, "required": ["b"]},
                    },
                }
            ],
        },
        {"messages": [user, done], "tools": {"get_weather": {}}},
    ]
    result, _ = run_validator(b"".join(line(o) for o in bad), category=Category.FUNCTION_CALL)
    errors = errors_by_line(result)
    assert errors[1][0][0] == "messages[1].tool_calls[0].function.arguments"
    assert "must be a JSON string" in errors[1][0][1]
    assert errors[2][0][0] == "messages[1].tool_calls[0].function.arguments"
    assert "not valid JSON" in errors[2][0][1]
    assert errors[3] == [("messages[2].tool_call_id", 'tool_call_id "zz" does not answer any earlier tool call.')]
    assert errors[4] == [("messages[1].tool_calls[0].function.name", "The function get_time is not defined in tools.")]
    paths5 = [p for p, _m in errors[5]]
    assert paths5 == [
        "tools[0].function.name",
        "tools[0].function.parameters.type",
        "tools[0].function.parameters.properties.a.type",
        "tools[0].function.parameters.required[0]",
    ]
    assert errors[6] == [("tools", "tools must be a list, not an object.")]


def test_dpo_rules():
    prompt = {"messages": [{"role": "user", "content": "Pick one"}]}
    out = [{"role": "assistant", "content": "A"}]
    bad = [
        {"input": prompt, "preferred_output": out, "non_preferred_output": out},
        {"input": prompt, "preferred_output": [], "non_preferred_output": out},
        {"input": prompt, "preferred_output": [{"role": "assistant", "content": ""}], "non_preferred_output": out},
        {"input": "Pick one", "preferred_output": out, "non_preferred_output": [{"role": "assistant", "content": "B"}]},
    ]
    result, _ = run_validator(b"".join(line(o) for o in bad), category=Category.DPO)
    errors = errors_by_line(result)
    assert errors[1][0][0] == "non_preferred_output" and "identical" in errors[1][0][1]
    assert errors[2][0][0] == "preferred_output"
    assert errors[3] == [("preferred_output[0].content", "The assistant message's content is empty.")]
    assert errors[4][0][0] == "input"


def _image_example(url, role="assistant"):
    part = [{"type": "image_url", "image_url": {"url": url}}]
    if role == "assistant":
        return {"messages": [{"role": "user", "content": "Draw it"}, {"role": "assistant", "content": part}]}
    return {"messages": [{"role": "user", "content": part}, {"role": "assistant", "content": "A picture."}]}


def test_image_urls():
    cases = [
        f"data:image/png;base64,{PNG}",  # 1 ok
        JPEG,  # 2 bare base64 ok
        "https://example.com/cat.jpeg",  # 3 ok
        "data:image/jpeg;base64," + base64.b64encode(b"hello, not an image").decode(),  # 4 not an image
        "data:text/plain;base64," + PNG,  # 5 wrong prefix
        "data:image/jpeg," + PNG,  # 6 not base64
        "data:image/jpeg;base64," + PNG,  # 7 says jpeg, is png
        "ftp://example.com/cat.jpeg",  # 8 scheme
        "not base64 at all!!",  # 9
    ]
    result, _ = run_validator(b"".join(line(_image_example(u)) for u in cases), category=Category.IMAGE_GENERATION)
    errors = errors_by_line(result)
    path = "messages[1].content[0].image_url.url"
    assert sorted(errors) == [4, 5, 6, 7, 8, 9]
    assert all(p == path for lst in errors.values() for p, _m in lst)
    assert "not a JPEG or PNG image" in errors[4][0][1]
    assert "text/plain" in errors[5][0][1]
    assert "not base64" in errors[6][0][1]
    assert "says image/jpeg but the data is a PNG" in errors[7][0][1]
    assert "http://" in errors[8][0][1]
    assert result.examples == 3 and result.images == 3  # images of valid examples only


def test_image_understanding_needs_exactly_one_image():
    two = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": JPEG}},
                    {"type": "image_url", "image_url": {"url": PNG}},
                ],
            },
            {"role": "assistant", "content": "Two pictures."},
        ]
    }
    none = chat()
    result, _ = run_validator(line(two) + line(none), category=Category.IMAGE_UNDERSTANDING)
    errors = errors_by_line(result)
    assert "single image" in errors[1][0][1] and "needs an image" in errors[2][0][1]
    images_in_chat, _ = run_validator(line(_image_example(JPEG, role="user")), category=Category.CHAT)
    assert "Images are not part of this category" in images_in_chat.errors[0].message


def test_legacy_form_is_converted():
    from datasets.schema import check_example

    problems: list = []
    example, _ = check_example({"input": "Q?", "target": "A."}, Category.CHAT, problems)
    assert problems == []
    assert example == {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]}
    result, _ = run_validator(line({"input": "Q?"}) + line({"input": "", "target": "A"}))
    assert [e.path for e in result.errors] == ["target", "input"]


def test_over_long_line_is_skipped_without_loading_it():
    long_line = b'{"messages": "' + b"x" * (3 * 1024 * 1024) + b'"}\n'
    result, _ = run_validator(line(chat()) + long_line + line(chat("2", "3")), max_line_bytes=1024 * 1024)
    assert [(e.line, e.code) for e in result.errors] == [(2, "line_too_long")]
    assert result.examples == 2 and result.lines == 3


def test_warnings_duplicates_context_and_few_examples():
    tok = tokenizer()
    long_text = "word " * 400
    data = line(chat()) + line(chat()) + line(chat("long", long_text))
    result, _ = run_validator(data, tok=tok, context_length=100, advised_min_examples=5)
    codes = sorted((w.line or 0, w.code) for w in result.warnings)
    assert codes == [(0, "few_examples"), (2, "duplicate"), (3, "too_long")]
    too_long = next(w for w in result.warnings if w.code == "too_long")
    assert "context is 100" in too_long.message and "truncated" in too_long.message
    assert result.valid and result.truncated_examples == 1 and result.duplicate_lines == 1


def test_errors_beyond_the_first_thousand_are_counted_and_all_in_the_report():
    data = b"".join(b'{"messages": 1}\n' for _ in range(1500))
    result, report = run_validator(data)
    assert result.error_count == 1500 and len(result.errors) == 1000
    rows = list(csv.reader(io.StringIO(report)))
    assert len(rows) == 1 + 1500 and rows[-1][0] == "1500"


def test_detection_prefers_the_most_specific_category_in_the_first_lines():
    data = line(chat()) * 3 + sample("reasoning.jsonl").read_bytes().splitlines(keepends=True)[0]
    result, _ = run_validator(data)
    assert result.category == Category.REASONING


def test_progress_is_reported_and_can_cancel():
    from datasets import validation

    seen = []
    old = validation.PROGRESS_EVERY
    validation.PROGRESS_EVERY = 0
    try:
        result, _ = run_validator(line(chat()) * 50, progress=lambda n: seen.append(n) or True)
        assert seen and seen[-1] == result.bytes_read == len(line(chat())) * 50
        assert seen == sorted(seen)
        with pytest.raises(validation.ValidationCancelled):
            run_validator(line(chat()) * 50, progress=lambda n: False)
    finally:
        validation.PROGRESS_EVERY = old


def test_report_cells_never_start_like_a_formula():
    tools = [
        {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {"type": "object", "properties": {}, "required": ['=HYPERLINK("http://evil")']},
            },
        }
    ]
    obj = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "tools": tools}
    result, report = run_validator(line(obj), category=Category.FUNCTION_CALL)
    assert str(result.errors[0].message).startswith("=HYPERLINK")  # shown as text on the page
    rows = list(csv.reader(io.StringIO(report)))
    assert rows[1][4].startswith("'=HYPERLINK")
