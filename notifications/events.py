"""The events a user is told about: one registry entry each, with its texts in both languages.

The texts live here rather than in the gettext catalog because an SMS must be measured in
each language (tests/test_notifications.py checks every one fits a single SMS). Placeholders:
``{name}`` and ``{code}`` (what it is about), ``{link}`` (a short link to its page) and any
key of the ``context`` given to ``notify``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.utils.translation import gettext_lazy as _

from .models import Channel

LANGUAGES = ("en", "zh-hans")
ALL_CHANNELS = (Channel.IN_APP, Channel.EMAIL, Channel.SMS)
OUTCOME = frozenset(ALL_CHANNELS)
IN_APP_ONLY = frozenset({Channel.IN_APP})
IN_APP_AND_EMAIL = frozenset({Channel.IN_APP, Channel.EMAIL})


@dataclass(frozen=True)
class Group:
    """A heading of the notification settings page; the page lists groups by ``order``."""

    label: object  # lazy translation
    order: int

    def __str__(self) -> str:
        return str(self.label)


@dataclass(frozen=True)
class Event:
    name: str
    label: object  # lazy translation, for the preferences page
    group: Group
    default_channels: frozenset
    level: str
    # language → {"title", "body", "sms": [richest, ..., shortest]}
    texts: dict = field(repr=False)
    # False: for webhooks only (a checkpoint saved every epoch is a pipeline's business, not a person's): no
    # notification row, no email or SMS, not on the settings page.
    for_people: bool = True


EVENTS: dict[str, Event] = {}


def register(event: Event) -> Event:
    for language in LANGUAGES:
        assert {"title", "body", "sms"} <= set(event.texts[language]), (event.name, language)
    EVENTS[event.name] = event
    return event


def get_event(name: str) -> Event:
    try:
        return EVENTS[name]
    except KeyError:
        raise KeyError(f"unknown notification event {name!r}; register it from its app's AppConfig.ready()") from None


WEBHOOKS = Group(_("Webhooks"), 90)

register(
    Event(
        "webhook.disabled",
        _("Webhook endpoint disabled"),
        WEBHOOKS,
        IN_APP_AND_EMAIL,
        "error",
        {
            "en": {
                "title": "Webhook endpoint {name} was disabled",
                "body": "Deliveries to {name} failed {failures} times in a row, so the endpoint was disabled: "
                "no more events go to it until you enable it again. The last error: {error}",
                "sms": [
                    "Webhook endpoint {name} was disabled after {failures} failures. {link}",
                    "A webhook endpoint was disabled. {link}",
                ],
            },
            "zh-hans": {
                "title": "Webhook 端点 {name} 已停用",
                "body": "向 {name} 的投递已连续失败 {failures} 次，端点已停用：重新启用前不再向它发送事件。"
                "最后一次错误：{error}",
                "sms": [
                    "Webhook 端点 {name} 连续失败 {failures} 次，已停用。{link}",
                    "一个 Webhook 端点已停用。{link}",
                ],
            },
        },
    )
)

# Texts around every message (email greeting and footer, the phone code SMS).
TEXTS = {
    "en": {
        "greeting": "Hello {username},",
        "open": "Open it in the console",
        "footer": "You receive this because of your notification settings: {preferences}",
        "verify_sms": "Your verification code is {code}. It is valid for 10 minutes.",
    },
    "zh-hans": {
        "greeting": "{username}，你好：",
        "open": "在控制台中打开",
        "footer": "你收到此邮件是因为你的通知设置：{preferences}",
        "verify_sms": "你的验证码是 {code}，10 分钟内有效。",
    },
}
