"""Celery really runs on Redis: a task round-trips through the broker to a worker process."""

from __future__ import annotations

import json

import pytest

from console.tasks import ping

pytestmark = pytest.mark.django_db(transaction=True)


def test_task_round_trips_through_a_real_worker(celery_worker):
    result = ping.apply_async(args=["hello"], queue="default")
    assert result.get(timeout=30)["pong"] == "hello"


@pytest.mark.parametrize("queue", ["training", "serving"])
def test_every_declared_queue_is_consumed(training_worker, queue):
    assert ping.apply_async(args=[queue], queue=queue).get(timeout=30)["pong"] == queue


def test_healthz_is_200_when_everything_answers(admin_client, celery_worker):
    response = admin_client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"]
    assert body["checks"]["redis"]["ok"]
    assert any(w.startswith("test@") for w in body["checks"]["celery"]["workers"])


def test_healthz_is_503_when_redis_is_down(admin_client, settings, tmp_path):
    settings.REDIS_URL = f"unix://{tmp_path}/nothing.sock"
    response = admin_client.get("/healthz")
    assert response.status_code == 503
    body = json.loads(response.content)
    assert body["status"] == "unhealthy"
    assert body["checks"]["database"]["ok"]
    assert not body["checks"]["redis"]["ok"]
    assert "error" in body["checks"]["redis"]
