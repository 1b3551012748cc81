"""Webhooks (issue 19, item 7): endpoints, Standard Webhooks signatures, delivery through the outbox.

A real HTTP receiver on 127.0.0.1 (the operator's WEBHOOKS_ALLOW_PRIVATE on) checks every request's signature
with its own implementation of the specification; the events come from the services that change the state."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from notifications import services
from notifications.models import Notification, OutboxMessage, WebhookAttempt, WebhookEndpoint
from notifications.webhooks import WebhookUrlError, webhook_endpoint_create, webhook_send_test

pytestmark = pytest.mark.django_db


# --- the receiver ---------------------------------------------------------------


def verify(secret: str, headers: dict, body: bytes, tolerance: int = 300) -> bool:
    """Standard Webhooks verification, written from the specification (not the console's code)."""
    msg_id, stamp, signatures = (
        headers.get("webhook-id"),
        headers.get("webhook-timestamp"),
        headers.get("webhook-signature"),
    )
    if not (msg_id and stamp and signatures) or abs(time.time() - int(stamp)) > tolerance:
        return False
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_") :])
    signed = msg_id.encode() + b"." + stamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for entry in signatures.split(" "):
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


class Receiver:
    """A threaded HTTP server that records each POST and answers with the statuses the test scripts."""

    def __init__(self):
        self.requests: list[dict] = []
        self.replies: list[int] = []
        self.default = 200
        self.secret = ""  # set by the test once it knows the endpoint's secret
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's hook name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.requests.append(
                    {
                        "path": self.path,
                        "headers": headers,
                        "body": body,
                        "at": time.time(),
                        "verified": bool(receiver.secret) and verify(receiver.secret, headers, body),
                    }
                )
                status = receiver.replies.pop(0) if receiver.replies else receiver.default
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks?src=console"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def payloads(self) -> list[dict]:
        return [json.loads(r["body"]) for r in self.requests]


@pytest.fixture
def receiver(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE = True
    found = Receiver()
    yield found
    found.close()


def endpoint_for(
    user,
    receiver,
    events=("fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled", "deployment.ready"),
):
    endpoint, secret = webhook_endpoint_create(user=user, url=receiver.url, events=list(events))
    receiver.secret = secret
    return endpoint


def webhook_rows(**filters):
    return OutboxMessage.objects.filter(channel="webhook", **filters).order_by("pk")


def send(message) -> tuple[str, float]:
    OutboxMessage.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())
    return services.outbox_send(message_id=message.pk)


def _job(user, **extra):
    from jobs.models import FineTuningJob
    from modelcards.models import BaseModel

    from .jobs_support import chat_lines, make_dataset

    return FineTuningJob.objects.create(
        owner=user,
        base_model=BaseModel.objects.order_by("pk").first(),
        training_dataset=make_dataset(user, chat_lines(4)),
        suffix="support-bot",
        fine_tuned_model=f"ft:base:support-bot:{extra.pop('tag', 'a1')}",
        **extra,
    )


# --- signatures and payloads ------------------------------------------------------


def test_a_cancelled_task_sends_a_signed_payload_with_the_api_job_object(alice, bob, receiver):
    from jobs.api import job_json
    from jobs.states import job_cancel

    endpoint = endpoint_for(alice, receiver)
    assert endpoint.secret.startswith("whsec_") and len(base64.b64decode(endpoint.secret[6:])) == 32
    job = _job(alice, tag="c")
    job_cancel(job=job)  # the service the page and the API call
    [row] = webhook_rows()
    assert row.webhook == endpoint and row.event == "fine_tuning.job.cancelled" and row.key.startswith("msg_")
    assert send(row) == ("sent", 0)
    [request] = receiver.requests
    assert request["verified"] and request["path"] == "/hooks?src=console"
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["webhook-id"] == row.key
    payload = json.loads(request["body"])
    assert payload["type"] == "fine_tuning.job.cancelled" and payload["timestamp"].endswith("Z")
    job.refresh_from_db()
    expected = job_json(job)
    assert payload["data"]["id"] == job.public_id and payload["data"]["object"] == "fine_tuning.job"
    assert payload["data"]["status"] == "cancelled" and set(payload["data"]) == set(expected)
    # The signature covers the body exactly: a changed byte or another secret does not verify.
    assert not verify(endpoint.secret, request["headers"], request["body"].replace(b"cancelled", b"succeeded"))
    other, _secret = webhook_endpoint_create(user=bob, url=receiver.url, events=["fine_tuning.job.cancelled"])
    assert not verify(other.secret, request["headers"], request["body"])
    [attempt] = WebhookAttempt.objects.filter(endpoint=endpoint)
    assert attempt.ok and attempt.status_code == 200 and attempt.duration_ms is not None and attempt.attempt == 1
    assert attempt.webhook_id == row.key
    # Bob's endpoint did not hear about alice's task.
    assert not webhook_rows(webhook=other).exists()


def test_only_the_chosen_events_go_to_an_endpoint_and_only_when_enabled(alice, receiver):
    from jobs.states import job_fail

    endpoint = endpoint_for(alice, receiver, events=["fine_tuning.job.succeeded"])
    job_fail(job=_job(alice, tag="f"), code="oom", message="out of memory")
    assert not webhook_rows().exists()
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(events=["fine_tuning.job.failed"], enabled=False)
    job_fail(job=_job(alice, tag="g"), code="oom", message="out of memory")
    assert not webhook_rows().exists()
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(enabled=True)
    job = _job(alice, tag="h")
    job_fail(job=job, code="oom", message="out of memory")
    [row] = webhook_rows()
    assert send(row) == ("sent", 0)
    [payload] = receiver.payloads()
    assert payload["type"] == "fine_tuning.job.failed"
    assert payload["data"]["error"] == {"code": "oom", "message": "out of memory", "param": None}


def test_a_succeeded_task_and_a_ready_deployment_each_send_their_object(alice, receiver):
    from types import SimpleNamespace

    from deployments.models import Deployment
    from deployments.services import _notify
    from jobs.runner import _finish_succeeded
    from modelcards.models import BaseModel

    endpoint_for(alice, receiver)
    job = _job(alice, tag="s", status="running")
    result = SimpleNamespace(
        trained_tokens=100,
        epochs_completed=1,
        final_loss=1.0,
        final_eval_loss=None,
        tokens_per_second=10.0,
        steps=3,
        output_dir="/nowhere",
    )
    assert _finish_succeeded(job, result, "/nowhere") == "succeeded"
    deployment = Deployment.objects.create(
        owner=alice, code="mine-1", status="running", base_model=BaseModel.objects.order_by("pk").first()
    )
    _notify(deployment, "deployment.ready")
    _notify(deployment, "deployment.scaled", instances=2)  # not chosen by this endpoint
    assert [send(row)[0] for row in webhook_rows()] == ["sent", "sent"]
    succeeded, ready = receiver.payloads()
    assert succeeded["type"] == "fine_tuning.job.succeeded" and succeeded["data"]["status"] == "succeeded"
    assert succeeded["data"]["fine_tuned_model"] == job.fine_tuned_model
    assert ready["type"] == "deployment.ready" and ready["data"]["object"] == "deployment"
    assert ready["data"]["id"] == deployment.public_id and ready["data"]["code"] == "mine-1"
    assert all(r["verified"] for r in receiver.requests)


def test_a_pause_and_an_epochs_checkpoint_send_their_objects_and_the_checkpoint_tells_no_person(alice, receiver):
    from jobs.models import Checkpoint
    from jobs.services import checkpoint_saved
    from jobs.states import job_finish_paused, job_pause

    endpoint_for(alice, receiver, events=["fine_tuning.job.paused", "fine_tuning.job.checkpoint.saved"])
    queued = _job(alice, tag="p", status="queued")
    job_pause(job=queued)  # queued: paused at once
    running = _job(alice, tag="q", status="running", progress={"current_steps": 7})
    job_pause(job=running)
    assert not webhook_rows(event="fine_tuning.job.paused").exclude(subject_code=queued.public_id).exists()
    assert job_finish_paused(job=running)  # the runner's end of the pause
    checkpoint = Checkpoint.objects.create(
        job=running,
        epoch=1,
        step=7,
        path="/nowhere/epoch-1",
        metrics={"current_steps": 7, "loss": 1.5, "eval_loss": 1.75},
    )
    checkpoint_saved(checkpoint=checkpoint)
    assert [send(row)[0] for row in webhook_rows()] == ["sent", "sent", "sent"]
    first, second, saved = receiver.payloads()
    assert [first["type"], second["type"]] == ["fine_tuning.job.paused"] * 2
    assert first["data"]["id"] == queued.public_id and second["data"]["status"] == "paused"
    assert saved["type"] == "fine_tuning.job.checkpoint.saved"
    assert saved["data"]["object"] == "fine_tuning.job.checkpoint" and saved["data"]["step_number"] == 7
    assert saved["data"]["fine_tuned_model_checkpoint"] == f"{running.fine_tuned_model}:ckpt-step-7"
    assert saved["data"]["metrics"]["valid_loss"] == 1.75 and saved["data"]["fine_tuning_job_id"] == running.public_id
    assert all(r["verified"] for r in receiver.requests)
    # People hear of the pause in the notification centre, never of a checkpoint.
    assert OutboxMessage.objects.filter(user=alice, event="training.paused", channel="in_app").count() == 2
    assert not OutboxMessage.objects.filter(event="training.checkpoint_saved").exclude(channel="webhook").exists()


# --- retries, back-off, disabling ---------------------------------------------------


def test_a_500_is_retried_with_back_off_under_the_same_id_then_succeeds(alice, receiver, settings):
    settings.NOTIFICATIONS_RETRY_BASE = 10
    endpoint = endpoint_for(alice, receiver)
    receiver.replies = [500, 503]
    row = webhook_send_test(endpoint=endpoint)
    before = timezone.now()
    assert send(row) == ("retry", 10)
    row.refresh_from_db()
    assert row.status == "pending" and row.next_attempt_at >= before + timedelta(seconds=10)
    assert "HTTP 500" in row.last_error
    assert services.outbox_send(message_id=row.pk) == ("skip", 0)  # not due yet
    assert send(row) == ("retry", 20)
    assert send(row) == ("sent", 0)
    assert [r["verified"] for r in receiver.requests] == [True, True, True]
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1
    attempts = list(WebhookAttempt.objects.filter(endpoint=endpoint).order_by("pk"))
    assert [(a.attempt, a.status_code, a.ok) for a in attempts] == [(1, 500, False), (2, 503, False), (3, 200, True)]
    assert attempts[0].error == "HTTP 500"
    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == 0 and endpoint.enabled


def test_an_endpoint_that_keeps_failing_is_disabled_and_its_owner_told(alice, receiver, settings):
    settings.WEBHOOKS_DISABLE_AFTER, settings.NOTIFICATIONS_MAX_ATTEMPTS = 3, 2
    receiver.default = 500
    endpoint = endpoint_for(alice, receiver)
    first, second = webhook_send_test(endpoint=endpoint), webhook_send_test(endpoint=endpoint)
    assert send(first)[0] == "retry" and send(first)[0] == "failed"  # gave up after NOTIFICATIONS_MAX_ATTEMPTS
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.consecutive_failures == 2
    assert send(second)[0] == "retry"
    endpoint.refresh_from_db()
    assert not endpoint.enabled and endpoint.disabled_at and "3 failed deliveries in a row" in endpoint.disabled_reason
    # The next try does not reach the endpoint: it is disabled.
    assert send(second) == ("failed", 0)
    assert len(receiver.requests) == 3
    # The owner is told in the notification centre and by email, through the same outbox.
    told = OutboxMessage.objects.filter(event="webhook.disabled", user=alice)
    assert {m.channel for m in told} == {"in_app", "email"}
    assert {services.outbox_send(message_id=m.pk)[0] for m in told} == {"sent"}
    [note] = Notification.objects.filter(user=alice, event="webhook.disabled")
    assert receiver.url in note.title and "3 times in a row" in note.body
    assert note.url.endswith(reverse("notifications:webhook", args=[endpoint.public_id]))
    assert len(mail.outbox) == 1 and receiver.url in mail.outbox[0].subject
    # New events skip a disabled endpoint; enabling it again sends them.
    webhook_url = reverse("notifications:webhook_enable", args=[endpoint.public_id])
    client = _client(alice)
    assert client.post(webhook_url).status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.consecutive_failures == 0 and not endpoint.disabled_reason


def _client(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def test_an_endpoint_deleted_while_its_message_is_sent_gets_nothing_and_logs_nothing(alice, receiver):
    from notifications.errors import PermanentError
    from notifications.transports import WebhookTransport

    endpoint = endpoint_for(alice, receiver)
    message = webhook_send_test(endpoint=endpoint)
    message = OutboxMessage.objects.get(pk=message.pk)  # as a worker holds it
    endpoint.delete()
    with pytest.raises(PermanentError, match="deleted"):
        WebhookTransport().send(message)
    assert receiver.requests == [] and not WebhookAttempt.objects.exists()


# --- where an endpoint may point --------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
        "http://100.64.0.1/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_loopback_private_and_link_local_addresses_are_refused(alice, settings, url):
    settings.WEBHOOKS_ALLOW_PRIVATE = False
    with pytest.raises(WebhookUrlError, match="public addresses only"):
        webhook_endpoint_create(user=alice, url=url, events=["deployment.ready"])
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    "url, says",
    [
        ("ftp://example.com/hook", "https://"),
        ("https://user:pw@example.com/", "user name or password"),
        ("https:///nohost", "no host"),
        ("http://example.com:99999/", "port"),
        ("https://no-such-host.invalid/", "cannot be found"),
    ],
)
def test_urls_that_cannot_be_endpoints_say_why(alice, url, says):
    with pytest.raises(WebhookUrlError, match=says):
        webhook_endpoint_create(user=alice, url=url, events=["deployment.ready"])


def test_a_private_address_is_refused_again_at_delivery(alice, receiver, settings):
    endpoint = endpoint_for(alice, receiver)
    row = webhook_send_test(endpoint=endpoint)
    settings.WEBHOOKS_ALLOW_PRIVATE = False  # as if the name now resolved inside (DNS rebinding)
    assert send(row) == ("failed", 0)
    assert receiver.requests == []
    row.refresh_from_db()
    assert "public addresses only" in row.last_error
    [attempt] = WebhookAttempt.objects.filter(endpoint=endpoint)
    assert not attempt.ok and attempt.status_code is None and "127.0.0.1" in attempt.error


# --- pages ---------------------------------------------------------------------------


def test_list_is_empty_at_first_and_linked_from_the_settings_and_the_menu(alice_client):
    page = alice_client.get(reverse("notifications:webhooks")).content.decode()
    assert "No endpoints yet" in page and reverse("notifications:webhook_create") in page
    settings_page = alice_client.get(reverse("notifications:preferences")).content.decode()
    assert reverse("notifications:webhooks") in settings_page


def test_create_refuses_a_bad_url_keeping_what_was_typed(alice_client, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE = False
    typed = "http://127.0.0.1:9/my-hook"
    response = alice_client.post(
        reverse("notifications:webhook_create"), {"url": typed, "events": ["deployment.ready"]}
    )
    html = response.content.decode()
    assert response.status_code == 200 and f'value="{typed}"' in html
    assert "public addresses only" in html and not WebhookEndpoint.objects.exists()
    response = alice_client.post(reverse("notifications:webhook_create"), {"url": "https://example.com/h"})
    assert "Choose at least one event." in response.content.decode()


def test_create_shows_the_secret_once_then_test_event_and_its_attempt(
    alice_client, alice, receiver, django_capture_on_commit_callbacks
):
    response = alice_client.post(
        reverse("notifications:webhook_create"),
        {"url": receiver.url, "description": "CI", "events": ["fine_tuning.job.succeeded", "deployment.failed"]},
    )
    endpoint = WebhookEndpoint.objects.get(user=alice)
    assert response.status_code == 302 and response["Location"] == reverse(
        "notifications:webhook", args=[endpoint.public_id]
    )
    assert endpoint.events == ["fine_tuning.job.succeeded", "deployment.failed"]
    first = alice_client.get(response["Location"]).content.decode()
    assert endpoint.secret in first and 'data-testid="webhook-secret"' in first
    again = alice_client.get(response["Location"]).content.decode()
    assert endpoint.secret not in again and "No deliveries yet" in again
    receiver.secret = endpoint.secret
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = alice_client.post(reverse("notifications:webhook_test", args=[endpoint.public_id]))
    assert response.status_code == 302 and len(callbacks) == 1
    [row] = webhook_rows()
    assert services.outbox_send(message_id=row.pk) == ("sent", 0)
    [payload] = receiver.payloads()
    assert payload["type"] == "webhook.test" and payload["data"]["endpoint"] == endpoint.public_id
    assert receiver.requests[0]["verified"]
    # The attempts log, also as the htmx partial the page polls.
    partial = alice_client.get(response["Location"], headers={"HX-Request": "true"}).content.decode()
    assert 'data-testid="attempt"' in partial and "webhook.test" in partial and row.key in partial
    assert "<html" not in partial


def test_attempts_are_paginated(alice_client, alice, receiver):
    endpoint = endpoint_for(alice, receiver)
    WebhookAttempt.objects.bulk_create(
        WebhookAttempt(
            endpoint=endpoint, webhook_id=f"msg_{i}", event_type="webhook.test", status_code=200, ok=True, duration_ms=i
        )
        for i in range(45)
    )
    url = reverse("notifications:webhook", args=[endpoint.public_id])
    first = alice_client.get(url).content.decode()
    assert first.count('data-testid="attempt"') == 20 and "Page 1 of 3 (45 in all)" in first
    last = alice_client.get(url + "?page=3").content.decode()
    assert last.count('data-testid="attempt"') == 5 and "msg_0<" in last


def test_another_users_endpoint_is_404_everywhere(alice, bob, client, receiver):
    endpoint = endpoint_for(alice, receiver)
    client.force_login(bob)
    listing = client.get(reverse("notifications:webhooks")).content.decode()
    assert receiver.url not in listing and "No endpoints yet" in listing
    for name in ("webhook", "webhook_delete"):
        assert client.get(reverse(f"notifications:{name}", args=[endpoint.public_id])).status_code == 404
    for name in ("webhook_test", "webhook_enable", "webhook_delete"):
        assert client.post(reverse(f"notifications:{name}", args=[endpoint.public_id])).status_code == 404
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk).exists() and not webhook_rows().exists()
    client.logout()
    assert client.get(reverse("notifications:webhooks")).status_code == 302  # to the login page


def test_delete_asks_first_then_removes_the_endpoint_and_its_waiting_messages(alice_client, alice, receiver):
    endpoint = endpoint_for(alice, receiver)
    webhook_send_test(endpoint=endpoint)
    url = reverse("notifications:webhook_delete", args=[endpoint.public_id])
    page = alice_client.get(url).content.decode()
    assert receiver.url in page and "cannot be undone" in page and WebhookEndpoint.objects.exists()
    response = alice_client.post(url)
    assert response.status_code == 302 and response["Location"] == reverse("notifications:webhooks")
    assert not WebhookEndpoint.objects.exists() and not webhook_rows().exists()


def test_admin_lists_endpoints_and_attempts_without_the_secret(admin_client, alice, receiver):
    endpoint = endpoint_for(alice, receiver)
    row = webhook_send_test(endpoint=endpoint)
    assert send(row) == ("sent", 0)
    page = admin_client.get(reverse("admin:notifications_webhookendpoint_change", args=[endpoint.pk]))
    assert page.status_code == 200 and endpoint.secret not in page.content.decode()
    listing = admin_client.get(reverse("admin:notifications_webhookattempt_changelist")).content.decode()
    assert row.key in listing
    # Staff's "send again" keeps the webhook-id: the receiver can tell it already has the message.
    response = admin_client.post(
        reverse("admin:notifications_outboxmessage_changelist"), {"action": "resend", "_selected_action": [row.pk]}
    )
    assert response.status_code == 302
    assert send(row) == ("sent", 0)
    assert [r["headers"]["webhook-id"] for r in receiver.requests] == [row.key, row.key]


def test_a_webhook_whose_worker_died_mid_send_is_sent_again_by_the_repair(alice, receiver):
    endpoint = endpoint_for(alice, receiver)
    row = webhook_send_test(endpoint=endpoint)
    past = timezone.now() - timedelta(minutes=10)
    OutboxMessage.objects.filter(pk=row.pk).update(status="sending", claimed_at=past, send_started_at=past)
    assert services.outbox_repair(sending_timeout=60, pending_grace=3600)["recovered"] == 1
    assert send(row) == ("sent", 0)  # receivers deduplicate by webhook-id, so sending again is safe
    assert receiver.requests[0]["headers"]["webhook-id"] == row.key


def test_the_preferences_page_has_no_webhook_column(alice_client):
    html = alice_client.get(reverse("notifications:preferences")).content.decode()
    assert 'value="training.succeeded:webhook"' not in html and 'value="training.succeeded:sms"' in html


def test_the_pages_and_their_errors_in_chinese(alice_client, alice, settings):
    import html

    settings.WEBHOOKS_ALLOW_PRIVATE = False
    alice.language = "zh-hans"
    alice.save(update_fields=["language"])
    listing = html.unescape(alice_client.get(reverse("notifications:webhooks")).content.decode())
    assert "还没有端点" in listing and "No endpoints yet" not in listing
    response = alice_client.post(
        reverse("notifications:webhook_create"), {"url": "http://10.0.0.7/hook", "events": ["deployment.ready"]}
    )
    form = html.unescape(response.content.decode())
    assert "只发送到公网地址" in form and "public addresses only" not in form
    assert "部署就绪 (deployment.ready)" in form  # the events' labels follow the reader's language


# --- through a real Celery worker ----------------------------------------------------------

QUEUE = "webhooks-test"  # not the session worker's queue: only the worker started here sends


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_failed_task_reaches_the_receiver_through_the_worker_after_a_retry(alice, receiver, settings):
    from django.db import connection, transaction

    from jobs.states import job_fail

    from . import services as test_services
    from .jobs_support import wait_for

    settings.NOTIFICATIONS_QUEUE = QUEUE
    endpoint = endpoint_for(alice, receiver)
    job = _job(alice, tag="w")
    receiver.replies = [500]
    worker = test_services.start_worker(
        connection.settings_dict["NAME"],
        queues=QUEUE,
        name="webhooks",
        extra_env={"NOTIFICATIONS_QUEUE": QUEUE, "WEBHOOKS_ALLOW_PRIVATE": "true", "NOTIFICATIONS_RETRY_BASE": "1"},
    )
    try:
        with transaction.atomic():
            job_fail(job=job, code="oom", message="out of memory")
        row = wait_for(lambda: webhook_rows(status="sent").first(), timeout=60, what="the webhook sent after a retry")
    finally:
        test_services.stop(worker)
    first, second = receiver.requests
    assert first["verified"] and second["verified"] and second["at"] - first["at"] >= 1.0
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"] == row.key
    assert json.loads(second["body"])["data"]["id"] == job.public_id and row.attempts == 2
    assert [(a.status_code, a.ok) for a in WebhookAttempt.objects.filter(endpoint=endpoint).order_by("pk")] == [
        (500, False),
        (200, True),
    ]
