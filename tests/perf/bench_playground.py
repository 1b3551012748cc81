"""Experience center benchmark: time to first token through the playground's session endpoint against the API.

Run on demand (not part of the test run):

    .venv/bin/python tests/perf/bench_playground.py [--rounds 60] [--concurrency 1]

It starts the console under uvicorn against a fresh database under var/bench-playground/ and a stand-in model
server (tests/experience_upstream.py: 8 chunks, the first after 10 ms, so no model competes for the cores), makes
a deployment whose instance is that server, then sends the same streamed request, interleaved, to
``POST /api/paas/v4/chat/completions`` with an API key (the gateway's ASGI fast path) and to
``POST /console/playground/chat/`` with a session cookie and CSRF token (Django's middleware, then the gateway's
own ``handle``). Prints the median time to first token of each, the difference and the ratio. Target: the
playground adds under 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CONSOLE_VAR_DIR", str(ROOT / "var" / "bench-playground"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.pop("DATABASE_URL", None)
os.environ.pop("REDIS_URL", None)
os.environ["SERVING_POOL_INSTANCES"] = "0"

from tests import experience_upstream  # noqa: E402  (the suite's one stand-in model server)

BODY = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8, "stream": True}


async def ttft(client, url: str, headers: dict, cookies: dict, model: str) -> float:
    started = time.perf_counter()
    async with client.stream("POST", url, headers=headers, cookies=cookies, json={**BODY, "model": model}) as r:
        assert r.status_code == 200, await r.aread()
        first = None
        async for line in r.aiter_lines():
            if first is None and line.startswith("data: {") and '"content"' in line:
                first = time.perf_counter() - started
        return first


async def measure(api: str, playground: str, key: str, session: dict, model: str, rounds: int, concurrency: int):
    import httpx

    direct, page = [], []
    api_headers = {"Authorization": f"Bearer {key}"}
    page_headers = {"X-CSRFToken": session["csrftoken"]}
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(3):  # warm both paths (connections, imports, the first query of each)
            await ttft(client, api, api_headers, {}, model)
            await ttft(client, playground, page_headers, session, model)
        for i in range(rounds):
            order = [("d", api, api_headers, {}), ("p", playground, page_headers, session)]
            if i % 2:
                order.reverse()
            for kind, url, headers, cookies in order:
                values = await asyncio.gather(*[ttft(client, url, headers, cookies, model) for _ in range(concurrency)])
                (direct if kind == "d" else page).extend(values)
    return direct, page


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()

    import logging

    import django

    django.setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from datetime import timedelta

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command
    from django.middleware.csrf import _get_new_csrf_string
    from django.utils import timezone

    from accounts.models import ApiKey, User
    from deployments.models import Deployment, Instance, Node
    from modelcards.models import BaseModel
    from tests import services
    from tests.serving_support import free_port, start_web

    db = settings.DATABASES["default"]["NAME"]
    Path(settings.VAR_DIR).mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    call_command("migrate", verbosity=0)
    user = User.objects.create_user("bench", password="x")
    key = ApiKey.create_for(user=user, name="bench")[1]
    store = SessionStore()
    store[SESSION_KEY], store[BACKEND_SESSION_KEY] = str(user.pk), "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    csrf = _get_new_csrf_string()
    session = {settings.SESSION_COOKIE_NAME: store.session_key, settings.CSRF_COOKIE_NAME: csrf, "csrftoken": csrf}

    redis = services.start_embedded_redis()
    port = free_port()
    upstream = experience_upstream.start(port, FAKE_DELAY="0.01", FAKE_TOKENS="8")
    web, url = start_web(db)
    try:
        node = Node.objects.create(name="stand-in", heartbeat_at=timezone.now() + timedelta(days=1), slots=0)
        deployment = Deployment.objects.create(
            owner=user,
            code="stand-in-bench",
            base_model=BaseModel.objects.order_by("pk").first(),
            status="running",
            desired_instances=1,
            ready_instances=1,
        )
        Instance.objects.create(
            deployment=deployment, node=node, runtime="transformers", state="ready", upstream_model="x", port=port
        )
        time.sleep(1)
        direct, page = asyncio.run(
            measure(
                f"{url}/api/paas/v4/chat/completions",
                f"{url}/console/playground/chat/",
                key,
                session,
                deployment.code,
                args.rounds,
                args.concurrency,
            )
        )
    finally:
        services.stop(web)
        services.stop(upstream)
        if redis is not None:
            services.stop(redis)
    d, p = statistics.median(direct) * 1000, statistics.median(page) * 1000
    print(
        f"time to first token, median of {len(direct)} each ({args.concurrency} at a time): API {d:.2f} ms, "
        f"playground {p:.2f} ms; playground adds {p - d:.2f} ms ({p / d:.3f}x) (target < 10 ms)"
    )
    return 0 if p - d < 10 else 1


if __name__ == "__main__":
    sys.exit(main())
