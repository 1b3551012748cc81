"""GET /healthz: the state of the database, Redis and the Celery workers."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from .celery import app as celery_app
from .redis import redis_client
from .tasks import BEAT_KEY


def _timed(check) -> dict:
    started = time.monotonic()
    try:
        result = {"ok": True, **(check() or {})}
    except Exception as exc:  # every failure is reported, never raised
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def _database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


def _redis() -> dict:
    with redis_client(settings.HEALTH_TIMEOUT) as client:
        client.ping()
        info = client.info("server")
    return {"version": info.get("redis_version"), "embedded": settings.EMBEDDED_REDIS}


def _workers() -> dict:
    replies = celery_app.control.ping(timeout=settings.HEALTH_TIMEOUT) or []
    workers = sorted(name for reply in replies for name in reply)
    if not workers:
        raise RuntimeError("no Celery worker answered the ping")
    return {"workers": workers}


def _beat() -> dict:
    with redis_client(settings.HEALTH_TIMEOUT) as client:
        raw = client.get(BEAT_KEY)
    return {"last_seen_seconds_ago": None if raw is None else round(time.time() - float(raw), 1)}


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _timed(_database), "redis": _timed(_redis)}
    checks["celery"] = _timed(_workers) if checks["redis"]["ok"] else {"ok": False, "error": "Redis is down"}
    healthy = all(c["ok"] for c in checks.values())
    # Beat is informational: a console without beat still serves.
    checks["beat"] = _timed(_beat) if checks["redis"]["ok"] else {"ok": False, "error": "Redis is down"}
    return JsonResponse({"status": "ok" if healthy else "unhealthy", "checks": checks}, status=200 if healthy else 503)
