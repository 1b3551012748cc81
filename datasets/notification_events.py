"""The datasets' notification events, registered from DatasetsConfig.ready()
(their texts in both languages, as notifications/events.py says)."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

from notifications.events import IN_APP_ONLY, Event, Group, register

DATASETS = Group(_("Datasets"), 20)


def register_events() -> None:
    """Called once, from the app's AppConfig.ready()."""
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
                    # "errors: 1", not "1 errors": the count stands apart from the noun (no plural forms here)
                    "body": "Validation of {code} finished; errors found: {errors}. Fix the file and upload it again.",
                    "sms": [
                        "Dataset {name} ({code}) has errors: {errors}. {link}",
                        "Dataset {name} has errors. {link}",
                    ],
                },
                "zh-hans": {
                    "title": "数据集 {name} 有错误",
                    "body": "{code} 校验完成，发现 {errors} 个错误；请修正后重新上传。",
                    "sms": ["数据集 {name}（{code}）有 {errors} 个错误。{link}", "数据集 {name} 有错误。{link}"],
                },
            },
        )
    )
