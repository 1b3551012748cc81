"""Issue 17, item 14: plurals, deployment notifications, server paths for staff only, the favicon, quiet logs."""

from __future__ import annotations

import logging

import pytest
from django.contrib.staticfiles import finders

from datasets.services import dataset_status_details
from deployments.models import Deployment, Instance, Node
from modelcards.models import BaseModel
from notifications.models import Notification

from .conftest import make_user
from .jobs_support import chat_lines, make_dataset

pytestmark = pytest.mark.django_db


def _deployment(owner, **extra) -> Deployment:
    return Deployment.objects.create(
        owner=owner,
        code=f"mine-{owner.pk}",
        status="running",
        base_model=BaseModel.objects.order_by("pk").first(),
        **extra,
    )


def test_one_is_singular(alice_client, alice):
    deployment = _deployment(alice, desired_instances=1, ready_instances=1)
    html = alice_client.get(f"/console/deployments/{deployment.public_id}/").content.decode()
    assert "1 of 1 instance ready" in html and "instances ready" not in html
    dataset = make_dataset(alice, chat_lines(1), name="one")
    dataset.examples, dataset.tokens = 1, 10
    dataset.save()
    assert dataset_status_details(dataset=dataset).startswith("1 example, 10 tokens")
    html = alice_client.get(f"/console/datasets/{dataset.public_id}/delete/").content.decode()
    assert "(1 example)" in html


def test_deployment_notifications_name_the_deployment(alice):
    from deployments.services import _notify

    deployment = _deployment(alice)
    _notify(deployment, "deployment.ready")
    _notify(deployment, "deployment.scaled", instances=1)
    for note in Notification.objects.filter(user=alice):
        assert deployment.code in note.title, note.title
        assert deployment.model_code in note.body, note.body


def test_server_paths_are_shown_to_staff_only(client, alice):
    deployment = _deployment(alice)
    node = Node.objects.create(name="n1")
    Instance.objects.create(
        deployment=deployment,
        node=node,
        runtime="transformers",
        state="ready",
        port=9,
        upstream_model="x",
        log_path="/srv/console/var/serving/logs/instance-1.log",
    )
    base = BaseModel.objects.create(
        code="pathy",
        display_name="Pathy",
        family="test",
        modality="text",
        weights_source="local_dir",
        weights_location="/srv/secret/weights",
    )
    client.force_login(alice)
    html = client.get(f"/console/deployments/{deployment.public_id}/").content.decode()
    assert "/srv/console" not in html
    card = client.get(f"/console/models/{base.code}/").content.decode()
    assert card.count("/srv/secret") == 0
    staff = make_user("root", is_staff=True)
    deployment.owner = staff
    deployment.save()
    client.force_login(staff)
    html = client.get(f"/console/deployments/{deployment.public_id}/").content.decode()
    assert "/srv/console/var/serving/logs/instance-1.log" in html
    assert "/srv/secret/weights" in client.get(f"/console/models/{base.code}/").content.decode()


def test_favicon_ico_leads_to_the_icon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"].endswith(".svg") and "favicon" in response["Location"]
    assert finders.find("console/favicon.svg")


def _celery_lines(capsys_logger: list[logging.LogRecord]) -> list[str]:
    from celery.app.trace import LOG_RECEIVED, LOG_SUCCESS

    logging.getLogger("celery.beat").info(
        "Scheduler: Sending due task %s (%s)", "deployments-reconcile", "deployments.reconcile_all"
    )
    logging.getLogger("celery.worker.strategy").info(LOG_RECEIVED, {"name": "deployments.reconcile_all", "id": "abc"})
    logging.getLogger("celery.app.trace").info(
        LOG_SUCCESS, {"name": "deployments.reconcile_all", "id": "abc", "runtime": 0.01, "return_value": 0}
    )
    logging.getLogger("celery.app.trace").info(
        LOG_SUCCESS, {"name": "jobs.train_next", "id": "def", "runtime": 9.5, "return_value": None}
    )
    return [f"{r.levelname} {r.getMessage()}" for r in capsys_logger]


def test_routine_periodic_work_logs_at_debug():
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    root = logging.getLogger()
    handler, level = Keep(), root.level
    root.addHandler(handler)
    try:
        root.setLevel(logging.INFO)
        lines = _celery_lines(records)
        assert not [line for line in lines if "reconcile" in line], lines
        assert any(line.startswith("INFO Task jobs.train_next[def] succeeded") for line in lines), lines
        records.clear()
        root.setLevel(logging.DEBUG)
        lines = _celery_lines(records)
        assert sum(line.startswith("DEBUG") and "reconcile" in line for line in lines) == 3, lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
