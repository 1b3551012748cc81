"""``transformers serve`` behind the instance's key: ``python -m deployments.serve_transformers serve ARGS``.

``transformers serve`` takes no API key, so any local process could call an instance's port (and an unpinned
pool instance loads whatever folder a request names). This runs the same CLI with its app wrapped in a check
of ``Authorization: Bearer <key>``, the key read from ``CONSOLE_INSTANCE_KEY`` (the environment is readable only
by the same OS user; never the command line, which every local user can read in /proc). ``/health`` stays open
(the node agent's check, as vLLM's). Without a key it refuses to start: an instance is never left open.
"""

from __future__ import annotations

import hmac
import json
import os
import sys

KEY_ENV = "CONSOLE_INSTANCE_KEY"
OPEN_PATHS = frozenset({"/health"})


class RequireKey:
    """ASGI middleware: HTTP requests other than /health need the instance's bearer key (401 otherwise)."""

    def __init__(self, app, key: str):
        self.app, self.expected = app, f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path") not in OPEN_PATHS:
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                body = json.dumps({"error": {"message": "Invalid or missing API key.", "type": "unauthorized"}})
                await send(
                    {"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"application/json")]}
                )
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)


def main(argv: list[str]) -> int:
    key = os.environ.pop(KEY_ENV, "")
    if not key:
        print(f"[serve] {KEY_ENV} is not set: refusing to serve without a key", file=sys.stderr, flush=True)
        return 2
    from transformers.cli import transformers as cli
    from transformers.cli.serving import server

    build = server.build_server  # serve.py imports it at run time, so the wrapped one is the one it uses
    server.build_server = lambda *args, **kwargs: RequireKey(build(*args, **kwargs), key)
    sys.argv = ["transformers", *argv]
    cli.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
