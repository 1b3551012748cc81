"""Notifications: tell a user about an event on the channels they chose, through an outbox.

``notify(...)`` is the one entry point. Call it inside the transaction that changes the state:
it writes one outbox row per channel and queues the sending after the commit, so a rolled-back
change tells nobody and a committed one is never forgotten (the beat's repair picks up rows
whose Celery message was lost).
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.crypto import constant_time_compare, salted_hmac

from common import queueing
from common.states import StateMachine

from . import conf
from .errors import PermanentError, TransientError
from .events import EVENTS, LANGUAGES, TEXTS, get_event
from .models import (
    USER_CHANNELS,
    Channel,
    Notification,
    OutboxMessage,
    OutboxStatus,
    PhoneVerification,
    Preference,
)
from .sms import fits_one_sms, get_sms_backend
from .webhooks import webhook_messages

# Every change of OutboxMessage.status goes through this table, in this module (its only writer), each a
# compare-and-set: a worker claims due messages and records each outcome (a retry goes back to pending), the
# repair recovers a dead worker's claim, staff resend what is not being sent.
OUTBOX = StateMachine(
    OutboxMessage,
    {
        OutboxStatus.PENDING: {OutboxStatus.SENDING, OutboxStatus.PENDING},
        OutboxStatus.SENDING: {OutboxStatus.SENT, OutboxStatus.FAILED, OutboxStatus.PENDING},
        OutboxStatus.SENT: {OutboxStatus.PENDING},
        OutboxStatus.FAILED: {OutboxStatus.PENDING},
    },
)

logger = logging.getLogger(__name__)

__all__ = [
    "notify",
    "outbox_send",
    "outbox_repair",
    "outbox_resend",
    "outbox_stuck_count",
    "notification_mark_read",
    "notifications_mark_all_read",
    "preferences_for",
    "preferences_save",
    "phone_code_send",
    "phone_code_check",
    "PhoneError",
    "number_texts",
    "sms_number_refusal",
]


# --- preferences --------------------------------------------------------------


def preferences_for(*, user, events: list[str] | None = None) -> dict[tuple[str, str], bool]:
    """(event, channel) → on/off for every registered event: the user's choices over the defaults."""
    names = events or [name for name, event in EVENTS.items() if event.for_people]
    chosen = {
        (p.event, p.channel): p.enabled
        for p in Preference.objects.filter(user=user, event__in=names).only("event", "channel", "enabled")
    }
    result = {}
    for name in names:
        event = get_event(name)
        for channel in USER_CHANNELS:
            if channel == Channel.IN_APP:
                result[(name, channel)] = True  # the notification centre always has it
            else:
                result[(name, channel)] = chosen.get((name, channel), channel in event.default_channels)
    return result


def preferences_save(*, user, enabled: set[tuple[str, str]]) -> None:
    """Store the page's choices: ``enabled`` holds the (event, channel) pairs that are on."""
    with transaction.atomic():
        for name in EVENTS:
            for channel in (Channel.EMAIL, Channel.SMS):
                Preference.objects.update_or_create(
                    user=user, event=name, channel=channel, defaults={"enabled": (name, channel) in enabled}
                )


# --- notify -------------------------------------------------------------------


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


def absolute_url(url: str) -> str:
    if not url or url.startswith(("http://", "https://")):
        return url
    return f"{conf.base_url()}/{url.lstrip('/')}"


def short_link(event_key: str) -> str:
    return absolute_url(reverse("notifications:open", args=[event_key]))


def _language(user) -> str:
    language = (getattr(user, "language", "") or "en").lower()
    return language if language in LANGUAGES else "en"


def _product_name(language: str) -> str:
    """The product's name in the message's language (its default name is translated)."""
    with translation.override(language):
        return str(settings.CONSOLE_PRODUCT_NAME)


def _sms_text(variants: list[str], values: dict) -> str:
    """The richest variant that fits one SMS; if none does, the shortest with the name cut down."""
    for variant in variants:
        text = variant.format_map(values)
        if fits_one_sms(text):
            return text
    name = values.get("name", "")
    while name:
        name = name[:-1]
        values = _Blank(values, name=name.rstrip() + "...")
        text = variants[-1].format_map(values)
        if fits_one_sms(text):
            return text
    return text


def render_message(*, user, event: str, channel: str, values: dict, url: str) -> dict:
    """Title, text (and HTML for email) of one message, in the user's language."""
    spec = get_event(event)
    language = _language(user)
    texts = spec.texts[language]
    values = _Blank(values)
    title = texts["title"].format_map(values)
    body = texts["body"].format_map(values)
    if channel == Channel.SMS:
        return {"title": title, "body": _sms_text(texts["sms"], values), "html": ""}
    if channel == Channel.EMAIL:
        around = TEXTS[language]
        context = {
            "title": title,
            "body": body,
            "url": url,
            "product": _product_name(language),
            "language": language,
            "greeting": around["greeting"].format(username=user.get_username()),
            "open": around["open"],
            "footer": around["footer"].format(preferences=absolute_url(reverse("notifications:preferences"))),
        }
        return {
            "title": title,
            "body": render_to_string("notifications/email/message.txt", context),
            "html": render_to_string("notifications/email/message.html", context),
        }
    return {"title": title, "body": body, "html": ""}


def _recipient(user, channel: str) -> str | None:
    if channel == Channel.IN_APP:
        return ""
    if channel == Channel.EMAIL:
        return user.email or None
    if channel == Channel.SMS:
        return user.phone if user.phone and user.phone_verified_at else None  # only a verified number
    return None


def notify(
    *, user, event: str, subject_name: str = "", subject_code: str = "", url: str = "", context: dict | None = None
) -> list[OutboxMessage]:
    """Tell ``user`` that ``event`` happened to ``subject_name`` (``subject_code``), linking to ``url``.

    Writes one outbox row per channel the user's preferences pick (in-app always) and queues
    each for sending when the current transaction commits. ``context`` fills the event's texts."""
    spec = get_event(event)
    prefs = preferences_for(user=user, events=[event])
    event_key = secrets.token_urlsafe(6)
    link = short_link(event_key)
    full_url = absolute_url(url)
    values = {
        **(context or {}),
        "name": subject_name or subject_code,
        "code": subject_code,
        "link": link,
        "url": full_url,
    }
    rows = []
    for channel in USER_CHANNELS if spec.for_people else ():
        if not prefs[(event, channel)]:
            continue
        recipient = _recipient(user, channel)
        if recipient is None:
            continue
        rendered = render_message(user=user, event=event, channel=channel, values=values, url=full_url)
        rows.append(
            OutboxMessage(
                user=user,
                event=event,
                channel=channel,
                recipient=recipient,
                key=secrets.token_hex(16),
                event_key=event_key,
                subject_name=subject_name[:200],
                subject_code=subject_code[:128],
                url=full_url,
                title=rendered["title"][:300],
                body=rendered["body"],
                html=rendered["html"],
                params={
                    "event": str(spec.label),
                    "name": (subject_name or subject_code)[:30],
                    "code": subject_code[:30],
                    "url": link,
                },
            )
        )
    # And to every webhook endpoint of the user's that asked for it (notifications/webhooks.py).
    rows += webhook_messages(
        user=user,
        event=event,
        code=subject_code,
        event_key=event_key,
        subject_name=subject_name[:200],
        subject_code=subject_code[:128],
        url=full_url,
    )
    rows = OutboxMessage.objects.bulk_create(rows)
    ids = [row.pk for row in rows]
    if ids:
        transaction.on_commit(lambda: enqueue(ids))
    return rows


def enqueue(ids: list[int], countdown: float = 0, batch: int = 50) -> None:
    """Queue the sending of these messages (one task per batch); a broker that is down now is the repair's
    business later."""
    for i in range(0, len(ids), batch):
        # the rows are in the database: a message not queued is the repair's to send again
        if not queueing.enqueue("notifications.send", ids[i : i + batch], queue=conf.queue(), countdown=countdown):
            return


# --- texts per number -----------------------------------------------------------


@dataclass(frozen=True)
class NumberTexts:
    """The texts a number received in the last hour, from every account, against its cap."""

    count: int
    limit: int  # SMS_PER_NUMBER_PER_HOUR (0: no cap)
    minutes: int  # until enough of them leave the last hour's window for one more (at least 1)

    @property
    def over(self) -> bool:
        return bool(self.limit) and self.count >= self.limit


def number_texts(*, phone: str, exclude_message: int | None = None, now=None) -> NumberTexts:
    """The texts sent to ``phone`` in the last hour by every account, against SMS_PER_NUMBER_PER_HOUR: phone codes
    (a PhoneVerification each) and notifications (an SMS outbox row handed to the backend: sent, or being sent
    now, which is what keeps two workers from both passing the cap). ``exclude_message``: the row being checked."""
    limit = conf.sms_per_number_per_hour()
    if not limit:
        return NumberTexts(count=0, limit=0, minutes=1)
    now = now or timezone.now()
    hour_ago = now - timedelta(hours=1)
    texts = OutboxMessage.objects.filter(
        recipient=phone,
        channel=Channel.SMS,
        send_started_at__gte=hour_ago,
        status__in=[OutboxStatus.SENT, OutboxStatus.SENDING],
    ).exclude(pk=exclude_message)
    codes = PhoneVerification.objects.filter(phone=phone, created_at__gte=hour_ago)
    times = sorted([*texts.values_list("send_started_at", flat=True), *codes.values_list("created_at", flat=True)])
    minutes = 1
    if len(times) >= limit:  # one more may go when the oldest len - limit + 1 have left the window
        seconds = (times[len(times) - limit] + timedelta(hours=1) - now).total_seconds()
        minutes = max(1, math.ceil(seconds / 60))
    return NumberTexts(count=len(times), limit=limit, minutes=minutes)


def sms_number_refusal(message: OutboxMessage) -> str:
    """Why this SMS must not go out now ("" when it may): its number had its texts for the hour. For the outbox row's
    last error, which staff read in the admin."""
    texts = number_texts(phone=message.recipient, exclude_message=message.pk)
    if not texts.over:
        return ""
    return (
        f"not sent: {message.recipient} received {texts.count} texts in the last hour from all accounts, "
        f"the limit per number (SMS_PER_NUMBER_PER_HOUR={texts.limit})"
    )


# --- sending ------------------------------------------------------------------


def _backoff(attempts: int) -> float:
    return min(conf.retry_base() * (2 ** max(attempts - 1, 0)), 3600.0)


def outbox_send(*, message_id: int) -> tuple[str, float]:
    """Send one message; see ``outbox_send_many``."""
    return outbox_send_many(message_ids=[message_id])[message_id]


def outbox_send_many(*, message_ids: list[int]) -> dict[int, tuple[str, float]]:
    """Claim these messages, hand each to its transport, record each outcome.

    The claim is one conditional update (pending and due → sending, under a token of this call),
    so a message taken by another worker, already sent or not yet due is skipped. The moment the
    messages go to their transports is written before (send_started_at): a worker that dies before
    it sent nothing, which is what lets the repair send those again without sending twice.
    Returns id → ("sent" | "failed" | "skip", 0) or ("retry", seconds until the next try)."""
    from .transports import get_transport

    results: dict[int, tuple[str, float]] = {pk: ("skip", 0) for pk in message_ids}
    token = secrets.token_hex(8)
    now = timezone.now()
    claimed = OUTBOX.move(
        OutboxMessage.objects.filter(pk__in=message_ids, next_attempt_at__lte=now),
        [OutboxStatus.PENDING],
        OutboxStatus.SENDING,
        claimed_at=now,
        claimed_by=token,
        send_started_at=None,
        attempts=F("attempts") + 1,
    )
    if not claimed:
        return results
    if conf.claim_pause():
        time.sleep(conf.claim_pause())
    messages = list(
        OutboxMessage.objects.select_related("user").filter(pk__in=message_ids, claimed_by=token).order_by("pk")
    )
    OutboxMessage.objects.filter(pk__in=[m.pk for m in messages], claimed_by=token).update(
        send_started_at=timezone.now()
    )
    transports: dict = {}
    try:
        for message in messages:
            transport = transports.get(message.channel) or transports.setdefault(
                message.channel, get_transport(message.channel)
            )
            results[message.pk] = _send_one(message, transport, token)
    finally:
        for transport in transports.values():
            transport.close()
    return results


def _send_one(message: OutboxMessage, transport, token: str) -> tuple[str, float]:
    clock = time.monotonic()
    try:
        provider_id = transport.send(message)
    except PermanentError as exc:
        _finish(message, token, OutboxStatus.FAILED, clock, last_error=f"permanent: {exc}"[:4000])
        return "failed", 0
    except Exception as exc:  # transient, or a fault of ours: try again later, up to the limit
        kind = "transient" if isinstance(exc, TransientError) else type(exc).__name__
        error = f"{kind}: {exc}"[:4000]
        if message.attempts >= conf.max_attempts():
            _finish(
                message,
                token,
                OutboxStatus.FAILED,
                clock,
                last_error=f"{error} (gave up after {message.attempts} tries)",
            )
            return "failed", 0
        delay = _backoff(message.attempts)
        _finish(
            message,
            token,
            OutboxStatus.PENDING,
            clock,
            last_error=error,
            next_attempt_at=timezone.now() + timedelta(seconds=delay),
        )
        return "retry", delay
    _finish(
        message,
        token,
        OutboxStatus.SENT,
        clock,
        sent_at=timezone.now(),
        provider_id=(provider_id or "")[:128],
        last_error="",
    )
    return "sent", 0


def _finish(message: OutboxMessage, token: str, status: str, clock: float, **fields) -> None:
    OUTBOX.move(
        OutboxMessage.objects.filter(pk=message.pk, claimed_by=token),
        [OutboxStatus.SENDING],
        status,
        duration_ms=int((time.monotonic() - clock) * 1000),
        **fields,
    )


def outbox_repair(
    *, pending_grace: float | None = None, sending_timeout: float | None = None, limit: int = 1000
) -> dict:
    """Beat: queue pending messages whose Celery message was lost; recover messages of dead workers.

    A worker that died after claiming but before handing the message to its transport sent
    nothing: the message goes back to pending. One that died during the hand-over may have sent
    it: the message is sent again only where the transport deduplicates by key (in-app, the
    development SMS backend); elsewhere it is marked failed with the reason, for staff to resend."""
    from .transports import get_transport

    now = timezone.now()
    grace = conf.pending_grace() if pending_grace is None else pending_grace
    timeout = conf.sending_timeout() if sending_timeout is None else sending_timeout
    counts = {"queued": 0, "recovered": 0, "abandoned": 0}
    recovered = []
    for message in OutboxMessage.objects.filter(
        status=OutboxStatus.SENDING, claimed_at__lt=now - timedelta(seconds=timeout)
    ).only("pk", "channel", "send_started_at", "claimed_at")[:limit]:
        still_claimed = OutboxMessage.objects.filter(pk=message.pk, claimed_at=message.claimed_at)
        if message.send_started_at is None or get_transport(message.channel).idempotent:
            if OUTBOX.move(
                still_claimed,
                [OutboxStatus.SENDING],
                OutboxStatus.PENDING,
                next_attempt_at=now,
                last_error="its worker stopped before it was sent; sending again",
            ):
                recovered.append(message.pk)
        else:
            counts["abandoned"] += OUTBOX.move(
                still_claimed,
                [OutboxStatus.SENDING],
                OutboxStatus.FAILED,
                last_error="the worker stopped while sending: it may or may not have arrived; resend if not",
            )
    counts["recovered"] = len(recovered)
    due = list(
        OutboxMessage.objects.filter(status=OutboxStatus.PENDING, next_attempt_at__lte=now - timedelta(seconds=grace))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    enqueue(recovered + due)
    counts["queued"] = len(due)
    return counts


def outbox_resend(*, messages) -> int:
    """Staff: send these messages again (a new idempotency key, so a provider does not drop it; a webhook keeps its
    ``webhook-id``, which is how its receiver tells a message it already has)."""
    count = 0
    ids = []
    for message in messages:
        if message.status == OutboxStatus.SENDING:
            continue
        # Not if a worker claimed it since it was read: that send goes on, and this one is not counted.
        if OUTBOX.move(
            message,
            [OutboxStatus.PENDING, OutboxStatus.SENT, OutboxStatus.FAILED],
            OutboxStatus.PENDING,
            next_attempt_at=timezone.now(),
            key=message.key if message.channel == Channel.WEBHOOK else secrets.token_hex(16),
            attempts=0,
            claimed_at=None,
            send_started_at=None,
        ):
            ids.append(message.pk)
            count += 1
    if ids:
        transaction.on_commit(lambda: enqueue(ids))
    return count


def outbox_stuck_count(*, older_than: float | None = None) -> int:
    """Messages pending past due, or sending, for longer than ``older_than`` seconds (default 10 min)."""
    cutoff = timezone.now() - timedelta(seconds=conf.stuck_after() if older_than is None else older_than)
    return OutboxMessage.objects.filter(
        Q(status=OutboxStatus.PENDING, next_attempt_at__lt=cutoff)
        | Q(status=OutboxStatus.SENDING, claimed_at__lt=cutoff)
    ).count()


# --- in-app -------------------------------------------------------------------


def notification_mark_read(*, notification: Notification) -> None:
    Notification.objects.filter(pk=notification.pk, read_at__isnull=True).update(read_at=timezone.now())


def notifications_mark_all_read(*, user) -> int:
    return Notification.objects.filter(user=user, read_at__isnull=True).update(read_at=timezone.now())


# --- phone binding ------------------------------------------------------------

CODE_TTL = timedelta(minutes=10)
MAX_CODE_TRIES = 5


class PhoneError(Exception):
    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.message, self.code = message, code


def _code_hash(phone: str, code: str) -> str:
    return salted_hmac("notifications.PhoneVerification", f"{phone}:{code}", algorithm="sha256").hexdigest()


def _minutes_until_one_expires(sends, now) -> int:
    """Whole minutes (at least 1) until the oldest of ``sends`` leaves the last hour's window."""
    oldest = sends.order_by("created_at").values_list("created_at", flat=True).first()
    seconds = (oldest + timedelta(hours=1) - now).total_seconds() if oldest else 0
    return max(1, math.ceil(seconds / 60))


def phone_code_send(*, user, phone: str) -> PhoneVerification:
    """Send a 6-digit code to ``phone`` (E.164) by SMS, within the user's limits an hour: in all, and to this number.

    Both count this user's own sends only: another user's codes to the same number never hold this one back."""
    from django.utils.translation import gettext as _

    now = timezone.now()
    hour_ago = now - timedelta(hours=1)
    with transaction.atomic():
        # One send at a time per user, so that parallel requests cannot both pass the counts below.
        list(get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk", flat=True))
        mine = PhoneVerification.objects.filter(user=user, created_at__gte=hour_ago)
        limit, count = conf.phone_codes_per_user_per_hour(), mine.count()
        if limit and count >= limit:
            raise PhoneError(
                _(
                    "Too many codes for your account: %(count)d sent in the last hour, the limit per account. "
                    "Try again in %(minutes)d min."
                )
                % {"count": count, "minutes": _minutes_until_one_expires(mine, now)},
                "user_limit",
            )
        to_number = mine.filter(phone=phone)
        limit, count = conf.phone_codes_per_number_per_hour(), to_number.count()
        if limit and count >= limit:
            raise PhoneError(
                _(
                    "Too many codes to %(phone)s: %(count)d sent in the last hour, the limit per number. "
                    "Try again in %(minutes)d min, or use another number."
                )
                % {"phone": phone, "count": count, "minutes": _minutes_until_one_expires(to_number, now)},
                "number_limit",
            )
        texts = number_texts(phone=phone, now=now)  # every account's texts to it: the number's own cap
        if texts.over:
            raise PhoneError(
                _(
                    "%(phone)s has received as many texts as it may in an hour. Try again in %(minutes)d min, or "
                    "use another number."
                )
                % {"phone": phone, "minutes": texts.minutes},
                "number_cap",
            )
        code = f"{secrets.randbelow(10**6):06d}"
        # A new code replaces the earlier ones.
        PhoneVerification.objects.filter(user=user, verified_at__isnull=True, expires_at__gt=now).update(expires_at=now)
        verification = PhoneVerification.objects.create(
            user=user, phone=phone, code_hash=_code_hash(phone, code), created_at=now, expires_at=now + CODE_TTL
        )
    body = TEXTS[_language(user)]["verify_sms"].format(code=code)
    try:
        get_sms_backend().send(
            to=phone, body=body, params={"code": code}, key=f"verify-{verification.pk}", kind="verification", user=user
        )
    except (PermanentError, TransientError) as exc:
        logger.warning("verification SMS to %s failed: %s", phone, exc)
        raise PhoneError(_("The code could not be sent; try again in a minute."), "send_failed") from exc
    return verification


def phone_code_check(*, user, code: str) -> PhoneVerification:
    """Check the code last sent to the user; on success the number becomes the user's verified phone."""
    from django.utils.translation import gettext as _
    from django.utils.translation import ngettext

    code = (code or "").strip()
    verification = PhoneVerification.objects.filter(user=user, verified_at__isnull=True).order_by("-id").first()
    now = timezone.now()
    if verification is None:
        raise PhoneError(_("Send a code to your phone first."), "no_code")
    if verification.expires_at <= now:
        raise PhoneError(_("The code has expired; send a new one."), "expired")
    # Count the try before comparing, with a conditional update, so parallel guesses cannot exceed the limit.
    if not PhoneVerification.objects.filter(pk=verification.pk, attempts__lt=MAX_CODE_TRIES).update(
        attempts=F("attempts") + 1
    ):
        raise PhoneError(_("Too many wrong codes; send a new one."), "too_many_tries")
    if not (
        len(code) == 6
        and code.isdigit()
        and constant_time_compare(verification.code_hash, _code_hash(verification.phone, code))
    ):
        left = MAX_CODE_TRIES - verification.attempts - 1
        if left <= 0:
            raise PhoneError(_("Too many wrong codes; send a new one."), "too_many_tries")
        raise PhoneError(
            ngettext("That code is not right; %(n)s try left.", "That code is not right; %(n)s tries left.", left)
            % {"n": left},
            "wrong_code",
        )
    with transaction.atomic():
        PhoneVerification.objects.filter(pk=verification.pk).update(verified_at=now)
        user.phone, user.phone_verified_at = verification.phone, now
        user.save(update_fields=["phone", "phone_verified_at"])
    return verification
