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
# The tiny test model (head_dim 8) is served with transformers serve (vLLM's CPU attention needs head_dim 32 or
# more); tests/test_serving_vllm.py runs vLLM nodes on a model of its own. Public pools start with no instance.
os.environ.setdefault("SERVING_RUNTIME", "transformers")
os.environ.setdefault("SERVING_POOL_INSTANCES", "0")
# Training and serving share the CPUs in the suite (some tests train in the test process itself, which pinning
# would then keep to part of the machine); tests/test_cpus.py checks the split of the default.
os.environ.setdefault("TRAINING_CPUS", "all")
os.environ.setdefault("SERVING_CPUS", "all")

from console.settings import *  # noqa: E402,F403
from console.settings import DATABASES  # noqa: E402

# A Celery worker started by the tests is told which database the test run made.
if os.environ.get("CONSOLE_TEST_WORKER_DB"):
    DATABASES["default"]["NAME"] = os.environ["CONSOLE_TEST_WORKER_DB"]

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# A worker started by the notification tests sends to a real SMTP server instead.
EMAIL_BACKEND = os.environ.get("CONSOLE_TEST_EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend")
DEBUG = False
# The suite's many calls from one address and one key within a minute are not an attack: the limits' own tests
# set them low (tests/test_throttling.py).
API_REQUESTS_PER_MINUTE = 100_000
API_AUTH_FAILURES_PER_MINUTE = 100_000
# No per-user limits for the suite's users (tests/test_quotas.py sets them).
USER_MAX_RUNNING_JOBS = 0
USER_MAX_DATASETS = 0
USER_MAX_DEPLOYMENTS = 0
