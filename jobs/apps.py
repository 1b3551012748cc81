from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Fine-tuning"

    def ready(self) -> None:
        from .notification_events import register_events

        register_events()
        from console.dashboard import register_panel
        from datasets.next_steps import register_action as register_dataset_action
        from modelcards.cards import register_action, register_section

        from .cards import dataset_fine_tune_action, fine_tune_action, overview_panel, overview_recent, training_section

        register_section("training", 20, training_section)

        from django.utils.translation import gettext_lazy as _

        from console.shell import register_nav_item

        register_nav_item("jobs", 30, "jobs:list", _("Fine-tuning tasks"), "⟳")
        register_action("fine-tune", 20, fine_tune_action)
        register_dataset_action("fine-tune", 10, dataset_fine_tune_action)

        from datasets.uploads import register_upload_url

        register_upload_url("jobs:create")  # its form takes a training file: the upload size limit applies
        register_panel("jobs", 20, "jobs/_overview.html", overview_panel)
        register_panel("jobs_recent", 20, "jobs/_overview_recent.html", overview_recent, wide=True)

        from notifications.webhooks import register_webhook_data

        from .webhooks import webhook_checkpoint, webhook_job

        register_webhook_data("fine_tuning.job", webhook_job)
        register_webhook_data("fine_tuning.job.checkpoint", webhook_checkpoint)
