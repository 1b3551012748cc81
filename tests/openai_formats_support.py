"""OpenAI's fine-tuning file formats, as its guide writes them: lines for the tests."""

from __future__ import annotations

import json

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "format": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "format"],
        },
    },
}


def openai_chat_lines(n: int = 24) -> list[dict]:
    """OpenAI's chat format as its guide writes it: a tool call first, then chats with a context-only turn."""
    colours = ["red", "green", "blue", "amber"]
    tool_line = {
        "messages": [
            {"role": "user", "content": "What is the weather in San Francisco?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_id",
                        "type": "function",
                        "function": {
                            "name": "get_current_weather",
                            "arguments": '{"location": "San Francisco, USA", "format": "celsius"}',
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_id", "content": "21.0"},
            {"role": "assistant", "content": "It is 21 degrees celsius in San Francisco, CA"},
        ],
        "tools": [WEATHER_TOOL],
        "parallel_tool_calls": False,
    }
    chats = [
        {
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "You answer questions about widgets."}]},
                {"role": "user", "name": "sam", "content": f"What colour is widget {i}?"},
                {"role": "assistant", "content": "Let me look that up.", "weight": 0},
                {"role": "user", "content": [{"type": "text", "text": "Go on."}]},
                {"role": "assistant", "content": f"Widget {i} is {colours[i % 4]}.", "weight": 1},
            ]
        }
        for i in range(n - 1)
    ]
    return [tool_line, *chats]


def openai_preference_lines(n: int = 12) -> list[dict]:
    return [
        {
            "input": {
                "messages": [{"role": "user", "content": f"Greet customer {i}."}],
                "tools": [],
                "parallel_tool_calls": True,
            },
            "preferred_output": [{"role": "assistant", "content": f"Hello customer {i}, welcome!"}],
            "non_preferred_output": [{"role": "assistant", "content": "What do you want?"}],
        }
        for i in range(n)
    ]


def jsonl(lines: list[dict]) -> bytes:
    return ("\n".join(json.dumps(line) for line in lines) + "\n").encode()
