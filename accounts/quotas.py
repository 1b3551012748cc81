"""Limits per user on what they may hold at once: fine-tuning tasks not yet finished, datasets stored, deployments
not cancelled. The defaults are settings (USER_MAX_*); an operator raises (or lowers) one user's in the admin
(the user's "Limits"). 0 is no limit. Each app enforces its own, inside the transaction that creates the row,
with ``quota_enforce``."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.utils.translation import gettext as _
from django.utils.translation import ngettext


@dataclass(frozen=True)
class Quota:
    field: str  # the User field that overrides the default
    setting: str


QUOTAS = {
    "running_jobs": Quota("max_running_jobs", "USER_MAX_RUNNING_JOBS"),
    "datasets": Quota("max_datasets", "USER_MAX_DATASETS"),
    "deployments": Quota("max_deployments", "USER_MAX_DEPLOYMENTS"),
}


class QuotaExceeded(Exception):
    def __init__(self, message: str, *, name: str, limit: int, used: int):
        super().__init__(message)
        self.message, self.name, self.limit, self.used = message, name, limit, used


def user_quota(*, user, name: str) -> int:
    """The user's limit (their own if an operator set one, else the setting's default); 0 is no limit."""
    quota = QUOTAS[name]
    own = getattr(user, quota.field, None)
    return int(getattr(settings, quota.setting)) if own is None else int(own)


def _message(name: str, limit: int) -> str:
    if name == "running_jobs":
        text = ngettext(
            "You already have %(limit)d fine-tuning task that has not finished, your limit: wait for it to finish "
            "or cancel it.",
            "You already have %(limit)d fine-tuning tasks that have not finished, your limit: wait for one to finish "
            "or cancel one.",
            limit,
        )
    elif name == "datasets":
        text = ngettext(
            "You already store %(limit)d dataset, your limit: delete it if you no longer need it.",
            "You already store %(limit)d datasets, your limit: delete one you no longer need.",
            limit,
        )
    else:
        text = ngettext(
            "You already have %(limit)d deployment, your limit: cancel it if you no longer need it.",
            "You already have %(limit)d deployments, your limit: cancel one you no longer need.",
            limit,
        )
    return text % {"limit": limit} + " " + _("An operator can raise your limit in the admin.")


def quota_enforce(*, user, name: str, used_qs) -> None:
    """Raise QuotaExceeded when ``used_qs`` (the user's rows that count) already reaches the user's limit.

    Call it inside the transaction that creates the row: the user's row is locked, so two creates at once
    cannot both pass the last free place."""
    from django.db import connection

    from accounts.models import User

    if user.pk is not None:
        users = User.objects.filter(pk=user.pk)
        if not connection.get_autocommit():  # in a transaction: hold the user's row until it ends
            users = users.select_for_update()
        user = users.first() or user
    limit = user_quota(user=user, name=name)
    if not limit:
        return
    used = used_qs.count()
    if used >= limit:
        raise QuotaExceeded(_message(name, limit), name=name, limit=limit, used=used)
