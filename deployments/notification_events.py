"""The deployments' notification events, registered from DeploymentsConfig.ready()
(their texts in both languages, as notifications/events.py says)."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from notifications.events import IN_APP_ONLY, OUTCOME, Event, Group, register

DEPLOYMENTS = Group(_("Private instances"), 30)


def register_events() -> None:
    """Its notification events and the webhook events that follow them; once, from the AppConfig's ready()."""
    register(
        Event(
            "deployment.ready",
            _("Deployment ready"),
            DEPLOYMENTS,
            OUTCOME,
            "success",
            {
                "en": {
                    "title": "Deployment {code} is ready",
                    "body": 'Deployment {code} of {name} is running: call it with model="{code}".',
                    "sms": ["Deployment {code} of {name} is ready. {link}", "Deployment {code} is ready. {link}"],
                },
                "zh-hans": {
                    "title": "部署 {code} 已就绪",
                    "body": '{name} 的部署 {code} 已运行，调用时传 model="{code}"。',
                    "sms": ["{name} 的部署 {code} 已就绪。{link}", "部署 {code} 已就绪。{link}"],
                },
            },
        )
    )
    register(
        Event(
            "deployment.failed",
            _("Deployment failed"),
            DEPLOYMENTS,
            OUTCOME,
            "error",
            {
                "en": {
                    "title": "Deployment {code} failed",
                    "body": "Deployment {code} of {name} failed: {error}",
                    "sms": ["Deployment {code} of {name} failed. {link}", "Deployment {code} failed. {link}"],
                },
                "zh-hans": {
                    "title": "部署 {code} 失败",
                    "body": "{name} 的部署 {code} 失败：{error}",
                    "sms": ["{name} 的部署 {code} 失败。{link}", "部署 {code} 失败。{link}"],
                },
            },
        )
    )
    register(
        Event(
            "deployment.scaled",
            _("Deployment scaled"),
            DEPLOYMENTS,
            IN_APP_ONLY,
            "info",
            {
                "en": {
                    "title": "Deployment {code} was scaled: {instances} ready",
                    "body": "Deployment {code} of {name} was scaled; instances ready: {instances}.",
                    "sms": [
                        "Deployment {code} of {name} was scaled; instances ready: {instances}. {link}",
                        "Deployment {code} was scaled; instances ready: {instances}. {link}",
                    ],
                },
                "zh-hans": {
                    "title": "部署 {code} 现有 {instances} 个实例就绪",
                    "body": "{name} 的部署 {code} 已调整，{instances} 个实例就绪。",
                    "sms": [
                        "{name} 的部署 {code} 现有 {instances} 个实例就绪。{link}",
                        "部署 {code} 已调整。{link}",
                    ],
                },
            },
        )
    )
    register(
        Event(
            "deployment.instance_replaced",
            _("Deployment instance replaced"),
            DEPLOYMENTS,
            IN_APP_ONLY,
            "warning",
            {
                "en": {
                    "title": "An instance of deployment {code} crashed and was replaced",
                    "body": "An instance of deployment {code} ({name}) stopped unexpectedly; a new one was started.",
                    "sms": [
                        "An instance of deployment {code} ({name}) was replaced. {link}",
                        "An instance of deployment {code} was replaced. {link}",
                    ],
                },
                "zh-hans": {
                    "title": "部署 {code} 的一个实例崩溃，已替换",
                    "body": "部署 {code}（{name}）的一个实例意外停止，已启动新实例。",
                    "sms": ["部署 {code}（{name}）的一个实例已替换。{link}", "部署 {code} 的实例已替换。{link}"],
                },
            },
        )
    )

    from notifications.webhooks import register_webhook_event

    register_webhook_event("deployment.ready", "deployment.ready", "deployment", _("Deployment ready"))
    register_webhook_event("deployment.failed", "deployment.failed", "deployment", _("Deployment failed"))
    register_webhook_event("deployment.scaled", "deployment.scaled", "deployment", _("Deployment scaled"))
