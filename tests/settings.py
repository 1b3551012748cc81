"""Test settings: the real settings, with their own var/ folder.

With DATABASE_URL and REDIS_URL unset the suite runs on SQLite and an embedded
Redis that the test setup starts; set them to run on PostgreSQL and a real Redis.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("CONSOLE_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))
os.environ.setdefault("CONSOLE_ENV", "test")
# Converting the default base model takes a while: every test run shares one copy.
os.environ.setdefault("CONSOLE_MODELS_DIR", str(Path(__file__).resolve().parent.parent / "var" / "models"))
# Playwright's sync API runs an event loop in the test thread; the ORM calls made
# beside it are still synchronous.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from console.settings import *  # noqa: E402,F403
from console.settings import DATABASES  # noqa: E402

# A Celery worker started by the tests is told which database the test run made.
if os.environ.get("CONSOLE_TEST_WORKER_DB"):
    DATABASES["default"]["NAME"] = os.environ["CONSOLE_TEST_WORKER_DB"]

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# A worker started by the notification tests sends to a real SMTP server instead.
EMAIL_BACKEND = os.environ.get("CONSOLE_TEST_EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend")
DEBUG = False
