"""The outbox with real Celery workers: a worker SIGKILLed between claim and send, and a Redis restart.

Each message (in-app, email to a real SMTP server, SMS through the development backend) arrives exactly once."""

from __future__ import annotations

import os
import signal

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.utils import timezone

from notifications import services
from notifications.models import Notification, OutboxMessage, SentSms

from . import services as test_services
from .jobs_support import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

QUEUE = "notifications-test"  # not the session worker's queue: only the workers started here send


@pytest.fixture
def notif_env(settings, smtp_server):
    settings.NOTIFICATIONS_QUEUE = QUEUE
    return {
        "NOTIFICATIONS_QUEUE": QUEUE,
        "CONSOLE_TEST_EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp_server.port),
        "SMS_BACKEND": "development",
    }


def start_worker(env: dict, name: str, **extra):
    return test_services.start_worker(
        connection.settings_dict["NAME"], queues=QUEUE, name=name, extra_env={**env, **extra}
    )


def notify_committed(user):
    user.phone, user.phone_verified_at = "+8613800138000", timezone.now()
    user.save()
    with transaction.atomic():
        rows = services.notify(
            user=user,
            event="training.succeeded",
            subject_name="support-bot",
            subject_code="ftjob-0123456789abcdef0123",
            url="/console/jobs/ftjob-0123456789abcdef0123/",
            context={"model": "ft:x:support-bot:abc"},
        )
    assert {r.channel for r in rows} == {"in_app", "email", "sms"}
    return rows


def assert_each_arrived_once(user, inbox):
    wait_for(lambda: OutboxMessage.objects.filter(status="sent").count() == 3, timeout=30, what="three messages sent")
    assert Notification.objects.filter(user=user).count() == 1
    assert SentSms.objects.filter(user=user).count() == 1
    wait_for(lambda: len(inbox.messages) >= 1, timeout=10, what="the email")
    assert len(inbox.messages) == 1 and inbox.messages[0]["To"] == "alice@example.com"


def test_a_worker_killed_between_claim_and_send_loses_and_doubles_nothing(alice, notif_env, smtp_server):
    doomed = start_worker(notif_env, "notif-doomed", NOTIFICATIONS_CLAIM_PAUSE="60")
    try:
        notify_committed(alice)
        wait_for(
            lambda: OutboxMessage.objects.filter(status="sending").count() == 3, timeout=30, what="messages claimed"
        )
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(10)
    finally:
        test_services.stop(doomed)
    claimed = list(OutboxMessage.objects.all())
    assert {(m.status, m.send_started_at) for m in claimed} == {("sending", None)}
    assert not Notification.objects.exists() and not SentSms.objects.exists() and not smtp_server.messages
    # Beat's repair: the claimed message was never handed to its transport, so it goes again.
    counts = services.outbox_repair(sending_timeout=0, pending_grace=0)
    assert counts["recovered"] == 3
    worker = start_worker(notif_env, "notif-after")
    try:
        assert_each_arrived_once(alice, smtp_server)
    finally:
        test_services.stop(worker)
    assert {(m.attempts, m.status) for m in OutboxMessage.objects.all()} == {(2, "sent")}


@pytest.mark.skipif(not django_settings.EMBEDDED_REDIS, reason="restarts the embedded Redis only")
def test_messages_pending_across_a_redis_restart_arrive_once(alice, notif_env, smtp_server, request):
    worker = start_worker(notif_env, "notif-redis")
    try:
        # Redis goes away (with whatever it held): the state change still commits, its messages wait in the outbox.
        try:
            redis.Redis(unix_socket_path=str(django_settings.EMBEDDED_REDIS_SOCKET)).shutdown(nosave=True)
        except redis.ConnectionError:
            pass
        rows = notify_committed(alice)
        assert OutboxMessage.objects.filter(pk__in=[r.pk for r in rows], status="pending").count() == 3
        proc = test_services.start_embedded_redis()
        request.config.add_cleanup(lambda: test_services.stop(proc))
        # Beat's repair finds them once they are overdue.
        OutboxMessage.objects.update(next_attempt_at=timezone.now() - timezone.timedelta(minutes=3))
        assert services.outbox_repair()["queued"] == 3
        assert_each_arrived_once(alice, smtp_server)
        # A second repair (or a redelivered Celery message) sends nothing again.
        assert services.outbox_repair(pending_grace=0)["queued"] == 0
    finally:
        test_services.stop(worker)
    assert len(smtp_server.messages) == 1 and SentSms.objects.count() == 1


def test_transient_failures_are_retried_by_the_worker_with_backoff(alice, notif_env, smtp_server, fake_provider):
    fake_provider.replies = [(503, {"Code": "ServiceUnavailable"}), (200, {"Code": "OK", "BizId": "42"})]
    env = {
        **notif_env,
        "SMS_BACKEND": "aliyun",
        "ALIYUN_SMS_ENDPOINT": fake_provider.url,
        "ALIYUN_SMS_ACCESS_KEY_ID": "id",
        "ALIYUN_SMS_ACCESS_KEY_SECRET": "secret",
        "ALIYUN_SMS_SIGN_NAME": "Console",
        "ALIYUN_SMS_TEMPLATE_CODE": "SMS_1",
        "NOTIFICATIONS_RETRY_BASE": "0.5",
    }
    worker = start_worker(env, "notif-retry")
    try:
        notify_committed(alice)
        sms = wait_for(
            lambda: OutboxMessage.objects.filter(channel="sms", status="sent").first(),
            timeout=30,
            what="the SMS sent after a retry",
        )
    finally:
        test_services.stop(worker)
    assert sms.attempts == 2 and sms.provider_id == "42" and len(fake_provider.requests) == 2


def test_done_when_a_verified_user_hears_of_a_finished_task_on_every_channel(alice, client, tiny_base, training_worker):
    """A new user binds and verifies a phone, starts a task, and when it ends gets the SMS, the email and the
    in-app notification, each linking to the task."""
    from jobs.services import job_create

    from .jobs_support import chat_lines, job_status, make_dataset

    client.force_login(alice)
    client.post("/console/account/phone/send/", {"phone": "+8613800138000"})
    code = SentSms.objects.get(user=alice).body.split()[4].rstrip(".")
    client.post("/console/account/phone/verify/", {"code": code})
    alice.refresh_from_db()
    assert alice.phone_verified_at is not None

    job, _created = job_create(
        user=alice,
        base_model=tiny_base,
        training_dataset=make_dataset(alice, chat_lines(8)),
        suffix="notify-me",
        hyperparameters={"n_epochs": 1, "batch_size": 4},
    )
    wait_for(lambda: job_status(job.public_id) == "succeeded", timeout=180, what="the task to succeed")
    wait_for(
        lambda: OutboxMessage.objects.filter(user=alice, event="training.succeeded", status="sent").count() == 3,
        timeout=30,
        what="the three messages",
    )
    page = f"http://127.0.0.1:8000/console/jobs/{job.public_id}/"
    note = Notification.objects.get(user=alice, event="training.succeeded")
    assert note.url == page and "notify-me" in note.title
    email = OutboxMessage.objects.get(user=alice, event="training.succeeded", channel="email")
    assert page in email.body and page in email.html and email.recipient == "alice@example.com"
    sms = SentSms.objects.filter(user=alice).latest("id")
    assert "notify-me" in sms.body and sms.segments == 1
    short = sms.body.rsplit(" ", 1)[-1]
    assert short.startswith("http://127.0.0.1:8000/n/")
    response = client.get(short.removeprefix("http://127.0.0.1:8000"))
    assert response.status_code == 302 and response["Location"] == page
