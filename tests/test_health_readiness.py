"""/healthz is 200 only when every expected process is up: the named Celery workers and, when expected, beat.

Anyone sees the status; the details are for staff sessions and for a monitoring system with HEALTHZ_TOKEN."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import redis
from django.conf import settings as django_settings

from console.tasks import BEAT_ALIVE_KEY

from . import services

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "monitoring-token-for-the-tests"


@pytest.fixture
def monitor(client, settings):
    """A monitoring system: it sends the token, so it gets the details."""
    settings.HEALTHZ_TOKEN = TOKEN
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    return client


def test_healthz_shows_the_status_to_anyone_and_the_details_to_staff_or_the_token(
    admin_client, alice_client, settings, celery_worker
):
    settings.HEALTHZ_TOKEN = TOKEN
    from django.test import Client

    anonymous = Client()
    public = anonymous.get("/healthz")
    body = public.json()
    assert public.status_code == 200 and body["status"] == "ok"
    # Only whether each check passed: no worker or host names, no Redis version, no nodes, no timings.
    assert body["checks"]["celery"] == {"ok": True} and body["checks"]["redis"] == {"ok": True}
    assert all(set(check) == {"ok"} for check in body["checks"].values()), body
    assert "@" not in public.content.decode() and "version" not in public.content.decode()
    # A signed-in user who is not staff, and a wrong token, see the same.
    assert alice_client.get("/healthz").json() == body
    assert anonymous.get("/healthz", headers={"Authorization": "Bearer wrong"}).json() == body
    # Staff, and the token, see everything.
    for details in (
        admin_client.get("/healthz").json(),
        anonymous.get("/healthz", headers={"Authorization": f"Bearer {TOKEN}"}).json(),
    ):
        assert any(w.startswith("test@") for w in details["checks"]["celery"]["workers"])
        assert details["checks"]["redis"]["version"]
    # No token configured: a bearer header opens nothing.
    settings.HEALTHZ_TOKEN = ""
    assert anonymous.get("/healthz", headers={"Authorization": "Bearer "}).json() == body


def test_healthz_keeps_its_503_public(client, settings, tmp_path):
    settings.REDIS_URL = f"unix://{tmp_path}/nothing.sock"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy" and response.json()["checks"]["redis"] == {"ok": False}


def test_healthz_waits_for_every_expected_worker(monitor, settings, celery_worker):
    settings.CONSOLE_EXPECTED_WORKERS = ["test", "trainer"]
    response = monitor.get("/healthz")
    body = response.json()
    assert response.status_code == 503 and body["status"] == "unhealthy"
    celery = body["checks"]["celery"]
    assert not celery["ok"] and celery["error"] == "expected workers did not answer: trainer"
    assert any(w.startswith("test@") for w in celery["workers"])

    settings.CONSOLE_EXPECTED_WORKERS = ["test"]
    assert monitor.get("/healthz").status_code == 200


def test_healthz_waits_for_beat_only_when_it_is_expected(monitor, settings, celery_worker, tmp_path):
    with redis.Redis.from_url(django_settings.REDIS_URL) as r:
        r.delete(BEAT_ALIVE_KEY)
    # Not expected (the default, as in production): shown, not required.
    response = monitor.get("/healthz")
    assert response.status_code == 200 and response.json()["checks"]["beat"]["running"] is False
    settings.CONSOLE_EXPECT_BEAT = True
    body = monitor.get("/healthz").json()
    assert body["status"] == "unhealthy" and body["checks"]["beat"]["error"] == "beat is not running"

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    beat = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "console",
            "beat",
            "-s",
            str(tmp_path / "schedule"),
            "--loglevel",
            "INFO",
        ],
        cwd=services.ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while (response := monitor.get("/healthz")).status_code != 200:
            assert beat.poll() is None and time.monotonic() < deadline, response.json()
            time.sleep(0.2)
        assert response.json()["checks"]["beat"]["running"] is True
    finally:
        services.stop(beat)
    # A beat that stops says so at once; one killed outright lapses within 6 s.
    assert monitor.get("/healthz").status_code == 503
