from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = _("Private instances")

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the configuration checks
        from .notification_events import register_events

        register_events()
        from console.health import register_report
        from modelcards.cards import (
            register_action,
            register_delete_consequences,
            register_promotion_blockers,
            register_section,
        )
        from modelcards.signals import fine_tuned_model_deleted, fine_tuned_model_weights_changed

        from . import cards

        fine_tuned_model_deleted.connect(cards.on_fine_tuned_model_deleted, dispatch_uid="deployments-cancel")
        register_section("deployments", 40, cards.card_section)
        register_section("merged-export", 50, cards.export_section)
        register_action("deploy", 30, cards.deploy_action)

        from console.shell import register_nav_item

        register_nav_item("deployments", 60, "deployments:list", _("Private instances"), "▣")
        register_delete_consequences(cards.delete_consequences)
        fine_tuned_model_weights_changed.connect(
            cards.on_fine_tuned_model_weights_changed, dispatch_uid="deployments-weights-changed"
        )
        register_promotion_blockers(cards.promotion_blockers)
        register_report("serving", cards.health_report)

        from notifications.webhooks import register_webhook_data

        from .api import webhook_deployment

        register_webhook_data("deployment", webhook_deployment)

        from django.db.models.signals import post_save

        from modelcards.models import FineTunedModel

        from .services import on_fine_tuned_model_saved

        post_save.connect(on_fine_tuned_model_saved, sender=FineTunedModel, dispatch_uid="deployments-prepare")
        _connect_route_changes()


def _saved_whole(sender, instance, update_fields=None, **kwargs) -> None:
    """A row saved with all its fields (created, or edited in the admin): a route may read any of them."""
    if update_fields is None:
        from . import routecache

        routecache.changed()


def _connect_route_changes() -> None:
    """What the gateway's cached routes are read from (deployments/routecache.py); state changes of deployments and
    instances are their state machines' (deployments/states.py)."""
    from django.db.models.signals import post_delete, post_save

    from modelcards.models import BaseModel, FineTunedModel

    from . import routecache
    from .models import Deployment, Instance

    for model in (Deployment, Instance, BaseModel, FineTunedModel):
        post_delete.connect(routecache.changed, sender=model, dispatch_uid=f"routes-deleted-{model.__name__}")
    for model in (Deployment, Instance):
        post_save.connect(_saved_whole, sender=model, dispatch_uid=f"routes-saved-{model.__name__}")
    for model in (BaseModel, FineTunedModel):  # rarely saved: any save (a fine-tune deleted, its weights promoted)
        post_save.connect(routecache.changed, sender=model, dispatch_uid=f"routes-saved-{model.__name__}")
