"""1,000 training-finished events fanned out to in-app + email + SMS: through the outbox vs inline.

Run on demand (not part of the test run):

    .venv/bin/python tests/perf/bench_notifications.py [--events 1000] [--concurrency 2]

Everything is real and local: an embedded Redis, a Celery worker (``--concurrency`` processes),
an SMTP server (aiosmtpd) receiving every email, the development SMS backend, SQLite under
var/bench-notifications/. Outbox: each event is ``notify()`` in its own transaction (what the code
that ends a task does), the worker sends after the commit; we time the callers and the moment the
last of the 3,000 messages is sent. Inline, in the same run: each event's three messages are
rendered and sent in the caller, one after another, as code without an outbox would.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CONSOLE_VAR_DIR", str(ROOT / "var" / "bench-notifications"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.pop("DATABASE_URL", None)
os.environ.pop("REDIS_URL", None)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--sms-latency",
        type=float,
        default=0.0,
        help="seconds a stand-in SMS provider API (Alibaba Cloud's, local) takes to answer; "
        "0 uses the development backend",
    )
    args = parser.parse_args()

    var = Path(os.environ["CONSOLE_VAR_DIR"])
    var.mkdir(parents=True, exist_ok=True)
    (var / "console.sqlite3").unlink(missing_ok=True)
    import django

    django.setup()
    from aiosmtpd.controller import Controller
    from django.conf import settings
    from django.core.mail import EmailMultiAlternatives, get_connection
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.utils import timezone

    from accounts.models import User
    from notifications import services
    from notifications.models import Notification, OutboxMessage, SentSms
    from notifications.sms import get_sms_backend
    from tests import services as test_services
    from tests.notifications_support import Inbox, free_port

    call_command("migrate", verbosity=0)
    import logging

    logging.getLogger("mail.log").setLevel(logging.WARNING)
    inbox = Inbox()
    inbox.port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=inbox.port)
    smtp.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", inbox.port
    sms_env = {"SMS_BACKEND": "development"}
    provider = None
    if args.sms_latency:
        from tests.notifications_support import FakeProvider

        provider = FakeProvider()
        provider.default = (200, {"Code": "OK", "BizId": "1"})
        provider.check = lambda request: time.sleep(args.sms_latency)
        sms_env = {
            "SMS_BACKEND": "aliyun",
            "ALIYUN_SMS_ENDPOINT": provider.url,
            "ALIYUN_SMS_ACCESS_KEY_ID": "id",
            "ALIYUN_SMS_ACCESS_KEY_SECRET": "secret",
            "ALIYUN_SMS_SIGN_NAME": "Console",
            "ALIYUN_SMS_TEMPLATE_CODE": "SMS_1",
        }
        for name, value in sms_env.items():
            setattr(settings, name, value)
    redis_proc = test_services.start_embedded_redis()
    test_services.flush_redis()
    worker = test_services.start_worker(
        connection.settings_dict["NAME"],
        queues="default",
        name="bench-notif",
        concurrency=args.concurrency,
        extra_env={
            "CONSOLE_TEST_EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": str(inbox.port),
            **sms_env,
        },
        log_path=var / "worker.log",
    )
    try:
        user, _ = User.objects.get_or_create(username="bench-notif", defaults={"email": "bench@example.com"})
        user.phone, user.phone_verified_at = "+8613800138000", timezone.now()
        user.save()

        def event_kwargs(i: int) -> dict:
            code = f"ftjob-{i:020d}"
            return {
                "user": user,
                "event": "training.succeeded",
                "subject_name": f"bench-{i}",
                "subject_code": code,
                "url": f"/console/jobs/{code}/",
                "context": {"model": f"ft:smollm2:bench-{i}:abc"},
            }

        # --- through the outbox -----------------------------------------------------------
        n = args.events
        started = time.perf_counter()
        for i in range(n):
            with transaction.atomic():
                services.notify(**event_kwargs(i))
        callers = time.perf_counter() - started
        total = OutboxMessage.objects.count()
        while OutboxMessage.objects.filter(status="sent").count() < total:
            if OutboxMessage.objects.filter(status="failed").exists():
                raise SystemExit(
                    f"a message failed: {OutboxMessage.objects.filter(status='failed').first().last_error}"
                )
            time.sleep(0.05)
        last = time.perf_counter() - started
        assert Notification.objects.count() == n and len(inbox.messages) == n
        sent_sms = len(provider.requests) if provider else SentSms.objects.count()
        assert sent_sms == n, (sent_sms, n)
        how = f"a provider API answering in {args.sms_latency * 1000:.0f} ms" if provider else "development backend"
        print(f"outbox: {total} messages ({n} events x 3 channels), {args.concurrency} worker processes, SMS: {how}")
        print(f"  callers: {callers:.2f} s in all, {callers / n * 1000:.2f} ms an event")
        print(f"  last message sent {last:.2f} s after the first event: {total / last:.0f} messages/s")

        # --- inline, in the caller ------------------------------------------------------------
        sms = get_sms_backend()
        started = time.perf_counter()
        for i in range(n, 2 * n):
            kwargs = event_kwargs(i)
            values = {
                **kwargs["context"],
                "name": kwargs["subject_name"],
                "code": kwargs["subject_code"],
                "link": services.short_link(f"inline{i}"),
                "url": services.absolute_url(kwargs["url"]),
            }
            for channel in ("in_app", "email", "sms"):
                msg = services.render_message(
                    user=user, event=kwargs["event"], channel=channel, values=values, url=values["url"]
                )
                if channel == "in_app":
                    Notification.objects.create(
                        user=user,
                        event=kwargs["event"],
                        event_key=f"inline{i}",
                        title=msg["title"],
                        body=msg["body"],
                        url=values["url"],
                    )
                elif channel == "email":
                    email = EmailMultiAlternatives(
                        msg["title"],
                        msg["body"],
                        to=[user.email],
                        connection=get_connection(fail_silently=False, timeout=10),
                    )
                    email.attach_alternative(msg["html"], "text/html")
                    email.send()
                else:
                    sms.send(to=user.phone, body=msg["body"], params={}, key=f"inline-{i}", user=user)
        inline = time.perf_counter() - started
        assert len(inbox.messages) == 2 * n
        assert (len(provider.requests) if provider else SentSms.objects.count()) == 2 * n
        print(
            f"inline: {3 * n} messages in {inline:.2f} s: {3 * n / inline:.0f} messages/s, "
            f"{inline / n * 1000:.2f} ms an event in the caller"
        )
        print(
            f"ratio: throughput outbox/inline {(total / last) / (3 * n / inline):.2f}x; "
            f"time in the caller inline/outbox {inline / callers:.2f}x"
        )
    finally:
        test_services.stop(worker)
        smtp.stop()
        if provider:
            provider.close()
        test_services.stop(redis_proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
