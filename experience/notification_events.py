"""The evaluation's notification event, beside the fine-tuning tasks', registered from ExperienceConfig.ready()
(their texts in both languages, as notifications/events.py says)."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from jobs.notification_events import TRAINING
from notifications.events import IN_APP_ONLY, Event, register


def register_events() -> None:
    """Its notification events and the webhook events that follow them; once, from the AppConfig's ready()."""
    register(
        Event(
            "evaluation.completed",
            _("Evaluation completed"),
            TRAINING,
            IN_APP_ONLY,
            "info",
            {
                "en": {
                    "title": "The evaluation of {name} finished",
                    "body": "The evaluation of model {name} finished: {verdict}",
                    "sms": ["The evaluation of {name} finished. {link}", "An evaluation finished. {link}"],
                },
                "zh-hans": {
                    "title": "{name} 的评估已完成",
                    "body": "模型 {name} 的评估已完成：{verdict}",
                    "sms": ["{name} 的评估已完成。{link}", "一项评估已完成。{link}"],
                },
            },
        )
    )

    from notifications.webhooks import register_webhook_event

    register_webhook_event("evaluation.completed", "evaluation.completed", "evaluation", _("Evaluation completed"))
