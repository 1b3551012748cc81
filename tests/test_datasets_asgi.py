"""Under uvicorn (ASGI) a dataset upload is stopped at the size limit while it streams in."""

from __future__ import annotations

import json

import pytest

from .asgi_support import asgi_call

pytestmark = pytest.mark.django_db


def call(path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]]):
    return asgi_call(path, chunks, headers)


def test_declared_length_over_the_limit_is_refused_before_reading(settings):
    settings.DATASET_MAX_BYTES = 1024 * 1024
    status, body, read = call("/api/paas/v4/files", [b"x" * 10], [(b"content-length", str(50 * 1024 * 1024).encode())])
    assert status == 413 and read == 0
    assert "larger than the limit of 1 MiB" in json.loads(body)["error"]["message"]


def test_streamed_body_is_cut_as_soon_as_it_passes_the_limit(settings):
    settings.DATASET_MAX_BYTES = 1024 * 1024
    chunk = b"y" * (64 * 1024)
    status, body, read = call(
        "/console/datasets/upload/", [chunk] * 200, [(b"content-type", b"multipart/form-data; boundary=zz")]
    )
    assert status == 413 and "larger than the limit" in json.loads(body)["errors"]["file"][0]
    limit_chunks = (1024 * 1024 + 64 * 1024) // len(chunk)
    assert read == limit_chunks + 1  # stopped right after the limit, not after 200 chunks (12.5 MiB)


def test_other_requests_pass_through(settings):
    status, body, _read = call("/api/paas/v4/files", [b"small"], [(b"content-length", b"5")])
    assert status == 401  # reached the API view, which wants a key
