"""The tests' one stand-in model server. The serving tests use a real inference server; this stands in for the
far side of a network in the experience center's live tests, the gateway's limits and the gateway's own cost
(tests/perf/bench_serving.py, bench_playground.py): an OpenAI-compatible stream of ``min(max_tokens, FAKE_TOKENS)``
chunks, one every FAKE_DELAY seconds (not streamed: the whole answer after that time), that writes to UPSTREAM_LOG
when a request starts (with its message count), when its client went away mid-stream, and when it finished."""

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

N = int(os.environ.get("FAKE_TOKENS", "200"))
DELAY = float(os.environ.get("FAKE_DELAY", "0.1"))
LOG = os.environ.get("UPSTREAM_LOG", "")


def start(port: int, **env: str) -> subprocess.Popen:
    """This server in a session of its own on ``port``, set by ``env`` (FAKE_TOKENS, FAKE_DELAY, UPSTREAM_LOG)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "experience_upstream:app",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=Path(__file__).parent,
        env={**os.environ, **env},
        start_new_session=True,
    )


def log(**fields) -> None:
    if LOG:
        with open(LOG, "a") as f:
            f.write(json.dumps(fields) + "\n")


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
    rid = f"{time.time():.6f}"
    n = min(int(req.get("max_tokens") or N), N)
    log(event="start", id=rid, messages=len(req.get("messages", [])), max_tokens=n)
    gone = asyncio.Event()

    async def watch():
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.ensure_future(watch())
    if not req.get("stream"):  # the whole answer after n token times, unless the client leaves first
        try:
            await asyncio.wait_for(gone.wait(), DELAY * n)
            log(event="disconnect", id=rid, sent=0)
            return
        except TimeoutError:
            pass
        text = "".join(f" tok{i}" for i in range(n))
        message = {"role": "assistant", "content": text}
        answer = {
            "id": "x",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": n + 7},
        }
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})
        watcher.cancel()
        log(event="finished", id=rid, sent=n)
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    for i in range(n):
        try:
            await asyncio.wait_for(gone.wait(), DELAY)
        except TimeoutError:
            pass
        if gone.is_set():
            log(event="disconnect", id=rid, sent=i)
            return
        chunk = {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": req["model"],
            "choices": [{"index": 0, "delta": {"content": f" tok{i}"}}],
        }
        if i == n - 1:
            chunk["choices"][0]["finish_reason"] = "length"
            chunk["usage"] = {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": n + 7}
        await send(
            {"type": "http.response.body", "body": b"data: " + json.dumps(chunk).encode() + b"\n\n", "more_body": True}
        )
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True})
    await send({"type": "http.response.body", "body": b""})
    watcher.cancel()
    log(event="finished", id=rid, sent=n)
