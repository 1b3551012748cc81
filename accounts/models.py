from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext_lazy as _

from common.phone import validate_e164


class User(AbstractUser):
    """A console user. Every resource in the console has one as its owner."""

    phone = models.CharField(
        _("phone number"),
        max_length=16,
        blank=True,
        validators=[validate_e164],
        help_text=_("In international form, e.g. +8613800138000. Used for SMS notifications."),
    )
    phone_verified_at = models.DateTimeField(_("phone verified at"), null=True, blank=True)
    language = models.CharField(
        _("language"), max_length=10, choices=settings.LANGUAGES, default=settings.LANGUAGE_CODE
    )
    # Limits of this user (accounts/quotas.py); blank: the setting's default.
    max_running_jobs = models.PositiveIntegerField(
        _("unfinished fine-tuning tasks at most"),
        null=True,
        blank=True,
        help_text=_("Blank: the default (USER_MAX_RUNNING_JOBS). 0: no limit."),
    )
    max_datasets = models.PositiveIntegerField(
        _("datasets stored at most"),
        null=True,
        blank=True,
        help_text=_("Blank: the default (USER_MAX_DATASETS). 0: no limit."),
    )
    max_deployments = models.PositiveIntegerField(
        _("deployments at most"),
        null=True,
        blank=True,
        help_text=_("Blank: the default (USER_MAX_DEPLOYMENTS). 0: no limit."),
    )

    def __str__(self) -> str:
        return self.get_username()


class ApiKeyQuerySet(models.QuerySet):
    def active(self) -> ApiKeyQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiKey(models.Model):
    """An API key of the form ``<key_id>.<secret>``.

    The database keeps only a SHA-256 of the secret. The SDK's JWT mode signs
    with the secret itself, so the secret is not random: it is an HMAC of the
    key id and a stored nonce under the server's SECRET_KEY. A copy of the
    database alone therefore reveals no usable key; rotating SECRET_KEY
    invalidates every key.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(_("name"), max_length=100)
    key_id = models.CharField(max_length=32, unique=True, editable=False)
    nonce = models.CharField(max_length=32, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def prefix(self) -> str:
        return self.key_id[:8]

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def derive_secret(self) -> str:
        digest = salted_hmac("console.ApiKey", f"{self.key_id}:{self.nonce}", algorithm="sha256").hexdigest()
        return digest[:40]

    @staticmethod
    def hash_secret(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    def check_secret(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_hash, self.hash_secret(secret))

    @classmethod
    def create_for(cls, *, user, name: str) -> tuple[ApiKey, str]:
        """Create a key and return it with its full text, which is shown once."""
        key = cls(user=user, name=name, key_id=secrets.token_hex(16), nonce=secrets.token_hex(16))
        secret = key.derive_secret()
        key.secret_hash = cls.hash_secret(secret)
        key.save()
        return key, f"{key.key_id}.{secret}"
