"""The suite's own helpers stop what they start: a test run leaves no server behind."""

from __future__ import annotations

import time

import pytest
from django.conf import settings as django_settings

from . import services


@pytest.mark.skipif(not django_settings.EMBEDDED_REDIS, reason="the embedded Redis only")
def test_the_embedded_redis_stops_on_sigterm(settings, tmp_path):
    """stop() signals the server's process group: without a group of its own the signal went nowhere, and every
    test run left its Redis running after a 20 s wait."""
    settings.EMBEDDED_REDIS_SOCKET = tmp_path / "redis.sock"  # a second server, beside the session's
    proc = services.start_embedded_redis()
    assert proc is not None
    try:
        started = time.monotonic()
        services.stop(proc, timeout=5)
        assert proc.poll() is not None, "the embedded Redis is still running"
        assert time.monotonic() - started < 5  # it went on SIGTERM, before any SIGKILL
    finally:
        proc.kill()
        proc.wait()
