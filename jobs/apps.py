from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Fine-tuning"

    def ready(self) -> None:
        from console.dashboard import register_panel
        from modelcards.cards import register_section

        from .cards import overview_panel, overview_recent, training_section

        register_section("training", 20, training_section)
        register_panel("jobs", 20, "jobs/_overview.html", overview_panel)
        register_panel("jobs_recent", 20, "jobs/_overview_recent.html", overview_recent, wide=True)

        from notifications.webhooks import register_webhook_data

        from .webhooks import webhook_checkpoint, webhook_job

        register_webhook_data("fine_tuning.job", webhook_job)
        register_webhook_data("fine_tuning.job.checkpoint", webhook_checkpoint)
