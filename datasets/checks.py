"""System checks of the dataset settings (console/settings.py, "Datasets"; console/checks.py has the mechanism)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Warning, register

from console.checks import range_errors

RANGES = [
    ("DATASET_MAX_BYTES", 1, "bytes of the largest upload"),
    ("DATASET_MAX_LINE_BYTES", 1, "bytes of the longest line"),
    ("DATASET_ADVISED_MIN_EXAMPLES", 0, "examples below which a dataset gets a warning"),
    ("DATASET_DEDUPE_WINDOW", 0, "seconds within which the same upload is the same file"),
]


@register("configuration")
def datasets_settings_check(app_configs=None, **kwargs) -> list[Error | Warning]:
    errors: list[Error | Warning] = [*range_errors(RANGES, "datasets")]
    if not errors and settings.DATASET_MAX_LINE_BYTES > settings.DATASET_MAX_BYTES:
        errors.append(
            Warning(
                f"DATASET_MAX_LINE_BYTES ({settings.DATASET_MAX_LINE_BYTES}) is more than DATASET_MAX_BYTES "
                f"({settings.DATASET_MAX_BYTES}): no file could hold such a line.",
                hint="Keep DATASET_MAX_LINE_BYTES at most DATASET_MAX_BYTES (the defaults are 64 MiB and 512 MiB).",
                id="datasets.W101",
            )
        )
    return errors
