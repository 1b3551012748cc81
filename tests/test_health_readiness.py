"""/healthz is 200 only when every expected process is up: the named Celery workers and, when expected, beat."""

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


def test_healthz_waits_for_every_expected_worker(client, settings, celery_worker):
    settings.CONSOLE_EXPECTED_WORKERS = ["test", "trainer"]
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 503 and body["status"] == "unhealthy"
    celery = body["checks"]["celery"]
    assert not celery["ok"] and celery["error"] == "expected workers did not answer: trainer"
    assert any(w.startswith("test@") for w in celery["workers"])

    settings.CONSOLE_EXPECTED_WORKERS = ["test"]
    assert client.get("/healthz").status_code == 200


def test_healthz_waits_for_beat_only_when_it_is_expected(client, settings, celery_worker, tmp_path):
    with redis.Redis.from_url(django_settings.REDIS_URL) as r:
        r.delete(BEAT_ALIVE_KEY)
    # Not expected (the default, as in production): shown, not required.
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json()["checks"]["beat"]["running"] is False
    settings.CONSOLE_EXPECT_BEAT = True
    body = client.get("/healthz").json()
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
        while (response := client.get("/healthz")).status_code != 200:
            assert beat.poll() is None and time.monotonic() < deadline, response.json()
            time.sleep(0.2)
        assert response.json()["checks"]["beat"]["running"] is True
    finally:
        services.stop(beat)
    # A beat that stops says so at once; one killed outright lapses within 6 s.
    assert client.get("/healthz").status_code == 503
