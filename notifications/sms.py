"""SMS: how long a text is on the air (GSM-7 or UCS-2), and the provider backends.

A single SMS carries 160 GSM-7 septets or 70 UCS-2 code units; a concatenated one 153 or
67 per part. Characters of the GSM extension table (``€ [ ] { } ~ ^ | \\``) take two septets.
One character outside the GSM alphabet (a Chinese character, ``…``, a curly quote) turns the
whole text into UCS-2.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.utils.module_loading import import_string

from .errors import PermanentError, TransientError

logger = logging.getLogger(__name__)

GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = "\f^{}\\[~]|€"
_BASIC = frozenset(GSM7_BASIC) - {"\x1b"}
_EXTENSION = frozenset(GSM7_EXTENSION)


@dataclass(frozen=True)
class SmsLength:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int

    @property
    def single(self) -> bool:
        return self.segments == 1


def sms_length(text: str) -> SmsLength:
    """Measure ``text`` as a phone network does."""
    septets = 0
    for ch in text:
        if ch in _BASIC:
            septets += 1
        elif ch in _EXTENSION:
            septets += 2
        else:
            units = len(text.encode("utf-16-le")) // 2
            return SmsLength("UCS-2", units, 1 if units <= 70 else -(-units // 67))
    return SmsLength("GSM-7", septets, 1 if septets <= 160 else -(-septets // 153))


def fits_one_sms(text: str) -> bool:
    return sms_length(text).single


# --- backends -------------------------------------------------------------------


class SmsBackend:
    """Sends one text to one E.164 number; returns the provider's message id.

    ``params`` are the named values for providers that send registered templates
    (Alibaba Cloud); ``kind`` is "notification" or "verification". ``idempotent`` says
    whether sending the same ``key`` twice delivers once."""

    name = "base"
    idempotent = False

    def send(self, *, to: str, body: str, params: dict, key: str, kind: str = "notification", user=None) -> str:
        raise NotImplementedError


class DevelopmentBackend(SmsBackend):
    """Stores what would be sent, once per key: staff see it in the admin, the user on the account page."""

    name = "development"
    idempotent = True

    def send(self, *, to, body, params, key, kind="notification", user=None) -> str:
        from .models import SentSms

        length = sms_length(body)
        row, _created = SentSms.objects.get_or_create(
            key=key,
            defaults={"to": to, "body": body, "encoding": length.encoding, "segments": length.segments, "user": user},
        )
        return f"dev-{row.pk}"


def _http(request: urllib.request.Request, timeout: float) -> tuple[int, bytes]:
    """Do one HTTP request; network trouble is transient. Returns (status, body) for any HTTP answer."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - configured https URL
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        raise TransientError(f"provider unreachable: {exc}") from exc


def _json(body: bytes) -> dict:
    try:
        value = json.loads(body.decode("utf-8", "replace") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def aliyun_percent_encode(value: str) -> str:
    """RFC 3986 encoding as Alibaba Cloud's RPC signature wants it (space → %20, ~ kept)."""
    return urllib.parse.quote(str(value), safe="~")


def aliyun_signature(params: dict, secret: str, method: str = "GET") -> str:
    """Signature version 1.0: HMAC-SHA1 over METHOD&%2F&encode(sorted canonical query), key secret + '&'."""
    canonical = "&".join(f"{aliyun_percent_encode(k)}={aliyun_percent_encode(v)}" for k, v in sorted(params.items()))
    to_sign = f"{method}&{aliyun_percent_encode('/')}&{aliyun_percent_encode(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class AliyunBackend(SmsBackend):
    """Alibaba Cloud SMS (dysmsapi ``SendSms``, API version 2017-05-25) over its signed HTTP API.

    Alibaba Cloud sends registered templates only: ``ALIYUN_SMS_TEMPLATE_CODE`` for notifications
    (variables ``event``, ``name``, ``code``, ``url``) and ``ALIYUN_SMS_VERIFY_TEMPLATE_CODE`` for
    phone codes (variable ``code``). ``OutId`` carries our key, so delivery receipts name the message."""

    name = "aliyun"
    # Codes the API documents as throttling or its own trouble: worth another try later.
    TRANSIENT_CODES = {
        "isp.SYSTEM_ERROR",
        "isv.BUSINESS_LIMIT_CONTROL",
        "isv.OUT_OF_SERVICE",
        "Throttling.User",
        "Throttling.Api",
        "ServiceUnavailable",
        "InternalError",
        "isp.RAM_PERMISSION_DENY",
    }

    def __init__(self):
        self.endpoint = settings.ALIYUN_SMS_ENDPOINT
        self.key_id = settings.ALIYUN_SMS_ACCESS_KEY_ID
        self.secret = settings.ALIYUN_SMS_ACCESS_KEY_SECRET
        self.sign_name = settings.ALIYUN_SMS_SIGN_NAME
        self.templates = {
            "notification": settings.ALIYUN_SMS_TEMPLATE_CODE,
            "verification": settings.ALIYUN_SMS_VERIFY_TEMPLATE_CODE,
        }
        self.timeout = settings.NOTIFICATIONS_HTTP_TIMEOUT

    def request_params(self, *, to: str, params: dict, key: str, kind: str) -> dict:
        if not (self.key_id and self.secret and self.sign_name and self.templates.get(kind)):
            raise PermanentError("Alibaba Cloud SMS is not configured (ALIYUN_SMS_* settings)")
        query = {
            "AccessKeyId": self.key_id,
            "Action": "SendSms",
            "Format": "JSON",
            "OutId": key,
            "PhoneNumbers": to.removeprefix("+"),
            "RegionId": settings.ALIYUN_SMS_REGION,
            "SignName": self.sign_name,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": secrets.token_hex(16),
            "SignatureVersion": "1.0",
            "TemplateCode": self.templates[kind],
            "TemplateParam": json.dumps(params, ensure_ascii=False, separators=(",", ":")),
            "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": "2017-05-25",
        }
        query["Signature"] = aliyun_signature(query, self.secret)
        return query

    def send(self, *, to, body, params, key, kind="notification", user=None) -> str:
        query = self.request_params(to=to, params=params, key=key, kind=kind)
        url = f"{self.endpoint.rstrip('/')}/?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}"
        status, raw = _http(urllib.request.Request(url, method="GET"), self.timeout)
        answer = _json(raw)
        code = str(answer.get("Code") or "")
        if status == 200 and code == "OK":
            return str(answer.get("BizId") or answer.get("RequestId") or "")
        detail = f"Alibaba Cloud SMS {status} {code or '-'}: {answer.get('Message') or raw[:200]!r}"
        if status >= 500 or status == 429 or code in self.TRANSIENT_CODES:
            raise TransientError(detail)
        raise PermanentError(detail)


class TwilioBackend(SmsBackend):
    """Twilio Programmable Messaging: ``POST /2010-04-01/Accounts/{sid}/Messages.json`` with basic auth."""

    name = "twilio"

    def __init__(self):
        self.api_base = settings.TWILIO_API_BASE
        self.sid = settings.TWILIO_ACCOUNT_SID
        self.token = settings.TWILIO_AUTH_TOKEN
        self.sender = settings.TWILIO_FROM
        self.service = settings.TWILIO_MESSAGING_SERVICE_SID
        self.timeout = settings.NOTIFICATIONS_HTTP_TIMEOUT

    def send(self, *, to, body, params, key, kind="notification", user=None) -> str:
        if not (self.sid and self.token and (self.sender or self.service)):
            raise PermanentError("Twilio is not configured (TWILIO_* settings)")
        form = {"To": to, "Body": body}
        if self.service:
            form["MessagingServiceSid"] = self.service
        else:
            form["From"] = self.sender
        auth = base64.b64encode(f"{self.sid}:{self.token}".encode()).decode()
        request = urllib.request.Request(
            f"{self.api_base.rstrip('/')}/2010-04-01/Accounts/{urllib.parse.quote(self.sid)}/Messages.json",
            data=urllib.parse.urlencode(form).encode(),
            headers={"Authorization": f"Basic {auth}", "Content-Type": "application/x-www-form-urlencoded"},
            method="POST",
        )
        status, raw = _http(request, self.timeout)
        answer = _json(raw)
        if status in (200, 201):
            return str(answer.get("sid") or "")
        detail = f"Twilio {status} {answer.get('code') or '-'}: {answer.get('message') or raw[:200]!r}"
        if status >= 500 or status == 429:
            raise TransientError(detail)
        raise PermanentError(detail)


BACKENDS = {
    "development": "notifications.sms.DevelopmentBackend",
    "aliyun": "notifications.sms.AliyunBackend",
    "twilio": "notifications.sms.TwilioBackend",
}


def get_sms_backend() -> SmsBackend:
    """The backend named by SMS_BACKEND: a short name above or a dotted path."""
    name = settings.SMS_BACKEND
    return import_string(BACKENDS.get(name, name))()
