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
class Event:
    name: str
    label: object  # lazy translation, for the preferences page
    group: object
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
        raise KeyError(f"unknown notification event {name!r}; register it in notifications/events.py") from None


TRAINING = _("Fine-tuning tasks")
DEPLOYMENTS = _("Private instances")
DATASETS = _("Datasets")
WEBHOOKS = _("Webhooks")

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
                "sms": ["Fine-tuning task {name} ({code}) failed. {link}", "Fine-tuning task {name} failed. {link}"],
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
        "dataset.invalid",
        _("Dataset validation found errors"),
        DATASETS,
        IN_APP_ONLY,
        "error",
        {
            "en": {
                "title": "Dataset {name} has errors",
                "body": "Validation of {code} finished with {errors} errors; fix them and upload the file again.",
                "sms": ["Dataset {name} ({code}) has {errors} errors. {link}", "Dataset {name} has errors. {link}"],
            },
            "zh-hans": {
                "title": "数据集 {name} 有错误",
                "body": "{code} 校验完成，发现 {errors} 个错误；请修正后重新上传。",
                "sms": ["数据集 {name}（{code}）有 {errors} 个错误。{link}", "数据集 {name} 有错误。{link}"],
            },
        },
    )
)
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
                "body": "Deployment {code} of {name} is running: call it with model=\"{code}\".",
                "sms": ["Deployment {code} of {name} is ready. {link}", "Deployment {code} is ready. {link}"],
            },
            "zh-hans": {
                "title": "部署 {code} 已就绪",
                "body": "{name} 的部署 {code} 已运行，调用时传 model=\"{code}\"。",
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
                "sms": ["Fine-tuning task {name} ({code}) paused. {link}", "Fine-tuning task {name} paused. {link}"],
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
                "sms": ["Webhook endpoint {name} was disabled after {failures} failures. {link}",
                        "A webhook endpoint was disabled. {link}"],
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
