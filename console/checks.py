"""Django system checks of the configuration (console/settings.py reads it): a value the helpers could read but
that cannot work (a negative timeout, an unknown name) is reported at start, by ``manage.py check``, ``migrate``
and ``runserver``, with the variable to fix. Each app checks its own settings with ``range_errors``; console's are
here (registered from ConsoleConfig.ready())."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Warning, register

# (setting, the smallest value that works, what it is): 0 where 0 means "no limit" or "off".
RANGES = [
    ("JOB_HEARTBEAT_INTERVAL", 0.001, "seconds between a training worker's heartbeats"),
    ("JOB_HEARTBEAT_TIMEOUT", 0.001, "seconds without a heartbeat after which a task is lost"),
    ("EVALUATION_HEARTBEAT_TIMEOUT", 0.001, "seconds without a heartbeat after which an evaluation is lost"),
    ("EVALUATION_MAX_TOKENS", 1, "tokens of an evaluated model's answer"),
    ("EVALUATION_JUDGE_MAX_TOKENS", 1, "tokens of the judge's answer"),
    ("TRAINING_CHECKPOINT_MINUTES", 0.001, "minutes between checkpoints inside an epoch"),
    ("TRAINING_STUCK_SECONDS", 0.001, "seconds without progress after which a step is stuck"),
    ("TRAINING_CHECKPOINTS_KEPT", 0, "epoch checkpoints kept (0: every one)"),
    ("TRAINING_PROCESSES", 0, "processes a training task runs in (0: one per GPU)"),
    ("TRAINING_CPU_ACTIVATION_MB", 1, "MB of activations a CPU training pass may use"),
    ("TRAINING_NODE_MEMORY_GB", 0, "GB of memory of a training node (0: this machine's)"),
    ("TRAINING_NODE_GPU_MEMORY_GB", 0, "GB of memory per GPU of a training node (0: a CPU node)"),
    ("CELERY_TASK_SOFT_TIME_LIMIT", 1, "seconds a task may run"),
    ("LOGIN_FAILURE_LIMIT", 1, "failed sign-ins before a lockout"),
    ("LOGIN_LOCKOUT_MINUTES", 0, "minutes of a sign-in lockout"),
    ("API_JWT_MAX_LIFETIME", 1, "seconds a signed API token may live"),
    ("API_JWT_MAX_CLOCK_SKEW", 0, "seconds a token's clock may be ahead"),
    ("API_REQUESTS_PER_MINUTE", 0, "API requests a minute per key (0: no limit)"),
    ("API_AUTH_FAILURES_PER_MINUTE", 0, "failed API authentications a minute per address (0: no limit)"),
    ("USER_MAX_RUNNING_JOBS", 0, "unfinished tasks per user (0: no limit)"),
    ("USER_MAX_DATASETS", 0, "datasets per user (0: no limit)"),
    ("USER_MAX_DEPLOYMENTS", 0, "deployments per user (0: no limit)"),
    ("HEALTH_TIMEOUT", 0.001, "seconds a /healthz ping may take"),
    ("EMAIL_PORT", 1, "the SMTP port"),
]


def range_errors(rules, id_prefix: str) -> list[Error]:
    """An Error for each setting below its smallest working value (None, an unset optional one, is fine)."""
    errors = []
    for number, (name, minimum, what) in enumerate(rules, 1):
        value = getattr(settings, name, None)
        if value is None or value >= minimum:
            continue
        at_least = "more than 0" if 0 < minimum < 1 else f"at least {minimum}"
        errors.append(
            Error(
                f"{name} is {value!r}: it is the {what}, and must be {at_least}.",
                hint=f"Set the environment variable {name} to {at_least}, or unset it for its default "
                "(README: Configuration).",
                id=f"{id_prefix}.E{number:03d}",
            )
        )
    return errors


@register("configuration")
def console_settings_check(app_configs=None, **kwargs) -> list[Error | Warning]:
    errors: list[Error | Warning] = [*range_errors(RANGES, "console")]
    if settings.JOB_HEARTBEAT_TIMEOUT <= settings.JOB_HEARTBEAT_INTERVAL:
        errors.append(
            Warning(
                f"JOB_HEARTBEAT_TIMEOUT ({settings.JOB_HEARTBEAT_TIMEOUT}) is not longer than JOB_HEARTBEAT_INTERVAL "
                f"({settings.JOB_HEARTBEAT_INTERVAL}): every running task would look lost between two heartbeats.",
                hint="Make JOB_HEARTBEAT_TIMEOUT several heartbeats long (the defaults are 60 and 5 seconds).",
                id="console.W101",
            )
        )
    errors += _cpu_errors()
    errors += _phone_region_errors()
    return errors


def _cpu_errors() -> list[Error]:
    from django.core.exceptions import ImproperlyConfigured

    from . import cpus

    try:
        cpus.split()
    except ImproperlyConfigured as exc:
        return [Error(str(exc), hint='Give a CPU list such as "0-5,8", or "all", or "auto".', id="console.E102")]
    return []


def _phone_region_errors() -> list[Error]:
    import phonenumbers

    region = settings.PHONE_DEFAULT_REGION
    if region and region not in phonenumbers.SUPPORTED_REGIONS:
        return [
            Error(
                f"PHONE_DEFAULT_REGION is {region!r}, not a region phone numbers are known for.",
                hint='Give a two-letter region code such as "CN" or "US".',
                id="console.E103",
            )
        ]
    return []
