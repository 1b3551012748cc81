"""GET /healthz: the state of the database, Redis, the Celery workers and beat.

200 only when the database and Redis answer, every worker named in CONSOLE_EXPECTED_WORKERS (at least one when
none is named) answers a ping, and beat runs if CONSOLE_EXPECT_BEAT is set; 503 otherwise. Anyone gets the status
and each check's ok; the details (worker and host names, versions, errors, the serving nodes) go only to a staff
session or a monitoring system that sends "Authorization: Bearer <HEALTHZ_TOKEN>"."""

from __future__ import annotations

import hmac
import time

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils.cache import patch_vary_headers
from django.views.decorators.cache import never_cache

from common.redis import redis_client

from .celery import app as celery_app
from .tasks import BEAT_ALIVE_KEY, BEAT_KEY


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
    answered = {name.partition("@")[0] for name in workers}
    missing = [name for name in settings.CONSOLE_EXPECTED_WORKERS if name not in answered]
    if missing:
        return {"ok": False, "workers": workers, "error": f"expected workers did not answer: {', '.join(missing)}"}
    return {"workers": workers}


def _beat() -> dict:
    with redis_client(settings.HEALTH_TIMEOUT) as client:
        raw, running = client.get(BEAT_KEY), bool(client.exists(BEAT_ALIVE_KEY))
    result = {"running": running, "last_seen_seconds_ago": None if raw is None else round(time.time() - float(raw), 1)}
    if settings.CONSOLE_EXPECT_BEAT and not running:
        result.update(ok=False, error="beat is not running")
    return result


# Informational reports that apps above console add from their AppConfig.ready() (console imports none of
# them): register_report("notifications", fn), fn() returning a dict. They never turn the page red.
_reports: dict = {}


def register_report(name: str, report) -> None:
    _reports[name] = report


def _may_see_details(request: HttpRequest) -> bool:
    """A request with the monitoring token, or a staff session."""
    token = settings.HEALTHZ_TOKEN
    scheme, _sep, given = request.headers.get("Authorization", "").strip().partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return True
    try:
        return bool(request.user.is_authenticated and request.user.is_staff)
    except Exception:  # the session store (the database) is down: what this page is there to report, not fail on
        return False


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    checks = {"database": _timed(_database), "redis": _timed(_redis)}
    checks["celery"] = _timed(_workers) if checks["redis"]["ok"] else {"ok": False, "error": "Redis is down"}
    checks["beat"] = _timed(_beat) if checks["redis"]["ok"] else {"ok": False, "error": "Redis is down"}
    # Unless beat is expected, it is informational: a console without beat still serves.
    healthy = all(check["ok"] for name, check in checks.items() if name != "beat" or settings.CONSOLE_EXPECT_BEAT)
    for name, report in _reports.items():
        checks[name] = _timed(report) if checks["database"]["ok"] else {"ok": False, "error": "database is down"}
    if not _may_see_details(request):
        checks = {name: {"ok": check["ok"]} for name, check in checks.items()}
    body = {"status": "ok" if healthy else "unhealthy", "checks": checks}
    response = JsonResponse(body, status=200 if healthy else 503)
    patch_vary_headers(response, ("Authorization", "Cookie"))
    return response
