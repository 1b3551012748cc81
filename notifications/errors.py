"""What a transport raises: try again later, or give up."""

from __future__ import annotations


class TransportError(Exception):
    pass


class TransientError(TransportError):
    """Worth another try later (network trouble, throttling, the provider's own errors)."""


class PermanentError(TransportError):
    """Will fail again whatever we do (bad number or address, refused, not configured)."""
