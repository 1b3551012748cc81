from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the first admin account if there is none, and print its password once."

    def add_arguments(self, parser):
        parser.add_argument("--username", default=settings.CONSOLE_ADMIN_USER)

    def handle(self, *args, username: str, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return
        password = settings.CONSOLE_ADMIN_PASSWORD or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        bar = "=" * 64
        self.stdout.write(
            f"\n{bar}\n  First run: created the admin account.\n"
            f"    username: {username}\n    password: {password}\n"
            f"  This password is shown once. Change it on the admin site.\n{bar}\n"
        )
