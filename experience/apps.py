from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ExperienceConfig(AppConfig):
    name = "experience"
    verbose_name = _("Experience center and usage")

    def ready(self) -> None:
        from .notification_events import register_events

        register_events()
        from jobs.compare import register_compare_rows
        from jobs.signals import job_succeeded
        from modelcards.cards import register_action, register_section

        from . import cards, compare

        job_succeeded.connect(cards.on_job_succeeded, dispatch_uid="experience-evaluate")
        register_section("evaluation", 30, cards.evaluation_section)
        register_action("try", 10, cards.try_action)

        from console.shell import register_nav_item

        register_nav_item("playground", 50, "playground:index", _("Experience center"), "▷")
        register_nav_item("usage", 70, "usage:index", _("Usage"), "◔")
        register_compare_rows(compare.evaluation_rows)

        from notifications.webhooks import register_webhook_data

        from .webhooks import webhook_evaluation

        register_webhook_data("evaluation", webhook_evaluation)
