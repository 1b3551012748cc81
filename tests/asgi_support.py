"""Drive the console's ASGI application with a request whose body arrives in chunks, as uvicorn delivers it."""

from __future__ import annotations

import asyncio
import concurrent.futures

from console.asgi import application


def run_async(make_coroutine):
    """``asyncio.run`` of ``make_coroutine()`` in a thread of its own: a test may run while another loop runs in
    the main thread (Playwright's sync API keeps one there once a browser test has started)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make_coroutine())).result()


def asgi_call(path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, int]:
    """Run one POST through the ASGI application; return (status, body, how many body chunks the app read)."""
    status, _headers, body, read = asgi_exchange(path, chunks, headers)
    return status, body, read


def asgi_exchange(
    path: str,
    chunks: list[bytes],
    headers: list[tuple[bytes, bytes]],
    method: str = "POST",
    client: tuple[str, int] = ("127.0.0.1", 5000),
) -> tuple[int, dict[str, str], bytes, int]:
    """As ``asgi_call``, with the response's headers too (lower-cased names); ``client`` is the connection's
    address and port (uvicorn's ``scope["client"]``)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": client,
        "server": ("testserver", 80),
    }
    pending = list(chunks)
    read = 0
    sent: list[dict] = []

    async def receive():
        nonlocal read
        if not pending:
            await asyncio.sleep(3600)  # the client keeps the connection open
        read += 1
        body = pending.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(pending)}

    async def send(message):
        sent.append(message)

    run_async(lambda: asyncio.wait_for(application(scope, receive, send), 30))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    response_headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
    return start["status"], response_headers, body, read
