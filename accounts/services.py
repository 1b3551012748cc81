"""What changes API keys' standing: revoking keys (the API keys page, the admin's action), and what a revocation, a
deactivated user or a deleted key must reach at once besides the database: the chat path's key cache
(accounts/keycache.py), told by the signals connected in AccountsConfig.ready()."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from accounts import keycache
from accounts.models import ApiKey, User


def api_keys_revoke(keys: QuerySet[ApiKey]) -> int:
    """Revoke the keys not revoked yet; calls with them fail from now on, on every path. Returns how many."""
    key_ids = list(keys.filter(revoked_at__isnull=True).values_list("key_id", flat=True))
    # The cache first: a call checked in the database meanwhile is not remembered past the revocation.
    keycache.forget(key_ids)
    return ApiKey.objects.filter(key_id__in=key_ids, revoked_at__isnull=True).update(revoked_at=timezone.now())


def key_saved(sender, instance: ApiKey, **kwargs) -> None:
    """A key saved revoked (the admin's form) is forgotten by the cache at once."""
    if instance.revoked_at is not None:
        keycache.forget([instance.key_id])


def key_deleted(sender, instance: ApiKey, **kwargs) -> None:
    """A deleted key (its user's deletion deletes them all) is forgotten by the cache at once."""
    keycache.forget([instance.key_id])


def user_saved(sender, instance: User, **kwargs) -> None:
    """A deactivated user's keys are forgotten by the cache at once (the database refuses them from now on)."""
    if not instance.is_active:
        keycache.forget(ApiKey.objects.filter(user=instance).values_list("key_id", flat=True))
