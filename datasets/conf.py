"""The datasets app's settings as it uses them. Each is read from the environment once, with its one default, in
console/settings.py; these functions only name and shape them."""

from __future__ import annotations

from django.conf import settings

MIB = 1024 * 1024


def max_bytes() -> int:
    """Largest upload accepted; enforced while the upload streams in."""
    return int(settings.DATASET_MAX_BYTES)


def max_line_bytes() -> int:
    """Longest line (one example) the validator reads; longer lines are an error."""
    return int(settings.DATASET_MAX_LINE_BYTES)


def advised_min_examples() -> int:
    """Below this many examples a dataset gets a warning ("at least several hundred")."""
    return int(settings.DATASET_ADVISED_MIN_EXAMPLES)


def dedupe_window_seconds() -> int:
    """An API upload of the same content by the same user within this window returns the first file."""
    return int(settings.DATASET_DEDUPE_WINDOW)


def multipart_slack() -> int:
    """Room for the multipart framing and the small form fields beside the file."""
    return 64 * 1024
