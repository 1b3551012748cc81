"""A stand-in OpenAI-compatible server: streams N chunks, one every DELAY seconds (like a model's tokens)."""

import asyncio
import json
import os
import time

N = int(os.environ.get("FAKE_TOKENS", "32"))
DELAY = float(os.environ.get("FAKE_DELAY", "0.02"))


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/health":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"status":"ok"}'})
        return
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    req = json.loads(body)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    for i in range(N):
        await asyncio.sleep(DELAY)
        chunk = {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": req["model"] + "@main",
            "choices": [{"index": 0, "delta": {"content": f" tok{i}"}}],
        }
        if i == N - 1:
            chunk["choices"][0]["finish_reason"] = "length"
            chunk["usage"] = {"prompt_tokens": 5, "completion_tokens": N, "total_tokens": N + 5}
        await send(
            {"type": "http.response.body", "body": b"data: " + json.dumps(chunk).encode() + b"\n\n", "more_body": True}
        )
    await send({"type": "http.response.body", "body": b""})
