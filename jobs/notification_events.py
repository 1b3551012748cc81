"""The fine-tuning tasks' notification events, registered from JobsConfig.ready()
(their texts in both languages, as notifications/events.py says)."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from notifications.events import IN_APP_ONLY, OUTCOME, Event, Group, register

TRAINING = Group(_("Fine-tuning tasks"), 10)


def register_events() -> None:
    """Its notification events and the webhook events that follow them; once, from the AppConfig's ready()."""
    register(
        Event(
            "training.succeeded",
            _("Training succeeded"),
            TRAINING,
            OUTCOME,
            "success",
            {
                "en": {
                    "title": "Fine-tuning task {name} succeeded",
                    "body": "Task {code} finished: model {model} is ready to use.",
                    "sms": [
                        "Fine-tuning task {name} ({code}) succeeded: model {model}. {link}",
                        "Fine-tuning task {name} ({code}) succeeded. {link}",
                        "Fine-tuning task {name} succeeded. {link}",
                    ],
                },
                "zh-hans": {
                    "title": "微调任务 {name} 已成功",
                    "body": "任务 {code} 已完成，模型 {model} 可以使用了。",
                    "sms": ["微调任务 {name}（{code}）已成功。{link}", "微调任务 {name} 已成功。{link}"],
                },
            },
        )
    )
    register(
        Event(
            "training.failed",
            _("Training failed"),
            TRAINING,
            OUTCOME,
            "error",
            {
                "en": {
                    "title": "Fine-tuning task {name} failed",
                    "body": "Task {code} failed: {error}",
                    "sms": [
                        "Fine-tuning task {name} ({code}) failed. {link}",
                        "Fine-tuning task {name} failed. {link}",
                    ],
                },
                "zh-hans": {
                    "title": "微调任务 {name} 失败",
                    "body": "任务 {code} 失败：{error}",
                    "sms": ["微调任务 {name}（{code}）失败。{link}", "微调任务 {name} 失败。{link}"],
                },
            },
        )
    )
    register(
        Event(
            "training.cancelled",
            _("Training cancelled"),
            TRAINING,
            OUTCOME,
            "warning",
            {
                "en": {
                    "title": "Fine-tuning task {name} was cancelled",
                    "body": "Task {code} was cancelled.",
                    "sms": [
                        "Fine-tuning task {name} ({code}) was cancelled. {link}",
                        "Fine-tuning task {name} was cancelled. {link}",
                    ],
                },
                "zh-hans": {
                    "title": "微调任务 {name} 已取消",
                    "body": "任务 {code} 已取消。",
                    "sms": ["微调任务 {name}（{code}）已取消。{link}", "微调任务 {name} 已取消。{link}"],
                },
            },
        )
    )
    register(
        Event(
            "training.requeued",
            _("Worker lost, task resumed"),
            TRAINING,
            IN_APP_ONLY,
            "warning",
            {
                "en": {
                    "title": "Fine-tuning task {name} lost its worker and will resume",
                    "body": "The worker training task {code} stopped; the task is back in the queue and will resume "
                    "from its last checkpoint.",
                    "sms": [
                        "Fine-tuning task {name} ({code}) lost its worker and will resume. {link}",
                        "Fine-tuning task {name} will resume on another worker. {link}",
                    ],
                },
                "zh-hans": {
                    "title": "微调任务 {name} 的训练节点中断，任务将继续",
                    "body": "训练任务 {code} 的节点已停止；任务已回到队列，将从最近的检查点继续。",
                    "sms": ["微调任务 {name}（{code}）节点中断，将继续。{link}", "微调任务 {name} 将继续训练。{link}"],
                },
            },
        )
    )
    register(
        Event(
            "training.paused",
            _("Training paused"),
            TRAINING,
            IN_APP_ONLY,
            "info",
            {
                "en": {
                    "title": "Fine-tuning task {name} paused",
                    "body": "Task {code} paused at step {step}; resume it to continue from there.",
                    "sms": [
                        "Fine-tuning task {name} ({code}) paused. {link}",
                        "Fine-tuning task {name} paused. {link}",
                    ],
                },
                "zh-hans": {
                    "title": "微调任务 {name} 已暂停",
                    "body": "任务 {code} 已在第 {step} 步暂停；恢复后将从该步继续。",
                    "sms": ["微调任务 {name}（{code}）已暂停。{link}", "微调任务 {name} 已暂停。{link}"],
                },
            },
        )
    )
    register(
        Event(
            "training.checkpoint_saved",
            _("Checkpoint saved"),
            TRAINING,
            frozenset(),
            "info",
            {
                "en": {"title": "Checkpoint of {name} saved", "body": "Task {code} saved a checkpoint.", "sms": [""]},
                "zh-hans": {"title": "{name} 的检查点已保存", "body": "任务 {code} 已保存检查点。", "sms": [""]},
            },
            for_people=False,
        )
    )

    from notifications.webhooks import register_webhook_event

    job = "fine_tuning.job"
    register_webhook_event("fine_tuning.job.succeeded", "training.succeeded", job, _("Training succeeded"))
    register_webhook_event("fine_tuning.job.failed", "training.failed", job, _("Training failed"))
    register_webhook_event("fine_tuning.job.cancelled", "training.cancelled", job, _("Training cancelled"))
    register_webhook_event("fine_tuning.job.paused", "training.paused", job, _("Training paused"))
    register_webhook_event(
        "fine_tuning.job.checkpoint.saved",
        "training.checkpoint_saved",
        "fine_tuning.job.checkpoint",
        _("Checkpoint saved"),
    )
