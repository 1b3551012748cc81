"""Issue 17, item 14: plurals, deployment notifications, server paths for staff only (a deployment that fails to
load included), the favicon, quiet logs."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from django.contrib.staticfiles import finders
from django.utils import timezone

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
        base_model=BaseModel.objects.order_by("pk").first(),
        **{"status": "running", **extra},
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


# What an instance that fails to load prints: the paths of the weights and of the server's code.
FAILING_SERVER = (
    "import sys; print('Loading the weights from /srv/console/var/models/secret-base', flush=True); "
    'raise OSError("Can\'t load the weights in /srv/console/var/models/secret-base/model.safetensors")'
)


def test_a_deployment_that_fails_to_load_shows_its_owner_no_server_path(client, alice, tmp_path, caplog):
    """The owner reads the exit and the exception with each path cut to its last part (page, API, notifications);
    the log's last lines go to the agent's log and to staff, on the deployment page."""
    from accounts.models import ApiKey
    from deployments.agent import NodeAgent, Tracked
    from notifications.models import OutboxMessage

    deployment = _deployment(alice, status="deploying", desired_instances=1)
    node = Node.objects.create(name="n1", slots=2, omp_threads=1, heartbeat_at=timezone.now())
    log_path = tmp_path / "instance.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-c", FAILING_SERVER], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        assert server.wait(timeout=30) == 1
    instance = Instance.objects.create(
        deployment=deployment,
        node=node,
        runtime="transformers",
        state="starting",
        port=9,
        pid=server.pid,
        log_path=str(log_path),
        started_at=timezone.now(),
    )
    agent = NodeAgent(name="n1", slots=2, omp_threads=1, node=node)
    agent.tracked[instance.pk] = Tracked(instance.pk, server.pid, 9, popen=server)
    with caplog.at_level(logging.WARNING, logger="deployments.agent"):
        agent.tick()

    instance.refresh_from_db()
    deployment.refresh_from_db()
    assert instance.state == "failed" and deployment.status == "failed"
    expected = "The server exited while loading (exit code 1): OSError: Can't load the weights in …/model.safetensors"
    assert instance.error == expected and deployment.status_reason == expected
    assert "/srv/console/var/models/secret-base" in caplog.text  # the agent's log keeps the full lines

    client.force_login(alice)
    html = client.get(f"/console/deployments/{deployment.public_id}/").content.decode()
    assert "/srv/" not in html and "…/model.safetensors" in html and 'data-testid="instance-log"' not in html
    key = ApiKey.create_for(user=alice, name="t")[1]
    api = client.get(f"/api/paas/v4/deployments/{deployment.public_id}", HTTP_AUTHORIZATION=f"Bearer {key}").json()
    assert api["error"]["message"] == expected and "/srv/" not in str(api)
    # The notification, in the app and by email, SMS or webhook as the owner's preferences say (the outbox).
    in_app = OutboxMessage.objects.get(user=alice, event="deployment.failed", channel="in_app")
    assert in_app.body == f"Deployment {deployment.code} of {deployment.model_code} failed: {expected}"
    for message in OutboxMessage.objects.filter(user=alice).values():
        assert "/srv/" not in str(message)

    staff = make_user("root", is_staff=True)
    Deployment.objects.filter(pk=deployment.pk).update(owner=staff)
    client.force_login(staff)
    html = client.get(f"/console/deployments/{deployment.public_id}/").content.decode()
    assert 'data-testid="instance-log"' in html
    assert "Loading the weights from /srv/console/var/models/secret-base" in html  # the tail, for staff


def test_the_last_exception_of_a_log_is_what_the_owner_reads():
    from console.errors import EXCEPTION_CHARS, last_exception

    traceback = (
        "INFO 12-05 10:00:00 [api_server.py:1] Loading /srv/models/base\n"
        "Traceback (most recent call last):\n"
        '  File "/opt/venv/lib/python3.11/site-packages/vllm/engine.py", line 9, in load\n'
        "ValueError: bad config in /srv/models/base/config.json\n"
        "\n"
        "During handling of the above exception, another exception occurred:\n"
        "\n"
        "ERROR 12-05 10:00:01 [core.py:390] RuntimeError: Engine core initialization failed. See root cause above.\n"
        "INFO 12-05 10:00:02 [launcher.py:7] Shutting down.\n"
    )
    assert last_exception(traceback) == "RuntimeError: Engine core initialization failed. See root cause above."
    assert last_exception(traceback.split("During")[0]) == "ValueError: bad config in …/config.json"
    assert (
        last_exception("torch.OutOfMemoryError: CUDA out of memory.") == "torch.OutOfMemoryError: CUDA out of memory."
    )
    assert last_exception("KeyboardInterrupt") == "KeyboardInterrupt"
    assert last_exception("Loading /srv/models/base\nKilled") == ""
    assert last_exception("") == ""
    long = last_exception("MemoryError: " + "x" * 1000)
    assert len(long) == EXCEPTION_CHARS and long.endswith("…")


def test_a_pool_model_that_cannot_be_prepared_tells_the_caller_no_server_path(caplog):
    from deployments.gateway import prepare_failure

    output = (
        "Traceback (most recent call last):\n"
        '  File "/srv/console/deployments/launch.py", line 69, in <module>\n'
        "modelcards.weights.WeightsMissing: the files of ft-1 cannot be read: /srv/console/var/media/models/ft-1\n"
    )
    with caplog.at_level(logging.WARNING, logger="deployments.gateway"):
        message = prepare_failure("ft-1", output)
    assert message == (
        "Preparing ft-1 for serving failed: modelcards.weights.WeightsMissing: the files of ft-1 cannot be read: …/ft-1"
    )
    assert "/srv/console/var/media/models/ft-1" in caplog.text
    assert prepare_failure("ft-1", "Killed\n") == (
        "Preparing ft-1 for serving failed; the operators can read why in the gateway's log."
    )


def test_load_errors_stored_before_lose_their_log_tails(alice):
    """The data migration: rows written when the agent stored the log's last lines read as it writes them now."""
    import importlib

    from django.apps import apps

    from deployments.models import DeploymentEvent

    migration = importlib.import_module("deployments.migrations.0005_load_errors_without_log_tails")
    old = (
        "The server exited while loading (exit code 1). Last lines of its log:\n"
        "Loading the weights from /srv/console/var/models/secret-base\n"
        "Traceback (most recent call last):\n"
        '  File "/srv/console/.venv/lib/python3.11/site-packages/transformers/modeling_utils.py", line 9\n'
        "OSError: Can't load the weights in /srv/console/var/models/secret-base/model.safetensors"
    )
    timed_out = "Not healthy 600 s after start. Last lines of its log:\nLoading /srv/console/var/models/secret-base"
    deployment = _deployment(alice, status="failed", status_reason=old)
    node = Node.objects.create(name="n1")
    failed = Instance.objects.create(
        deployment=deployment, node=node, runtime="transformers", state="failed", error=old
    )
    slow = Instance.objects.create(
        deployment=deployment, node=node, runtime="transformers", state="failed", error=timed_out
    )
    lost = Instance.objects.create(
        deployment=deployment, node=node, runtime="transformers", state="failed", error="Node n1 stopped answering."
    )
    event = DeploymentEvent.objects.create(deployment=deployment, level="error", message=f"Failed: {old}")

    migration.cut_log_tails(apps, None)

    expected = "The server exited while loading (exit code 1): OSError: Can't load the weights in …/model.safetensors"
    deployment.refresh_from_db()
    assert deployment.status_reason == expected
    assert Instance.objects.get(pk=failed.pk).error == expected
    assert Instance.objects.get(pk=slow.pk).error == "Not healthy 600 s after start."
    assert Instance.objects.get(pk=lost.pk).error == "Node n1 stopped answering."
    assert DeploymentEvent.objects.get(pk=event.pk).message == f"Failed: {expected}"


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
