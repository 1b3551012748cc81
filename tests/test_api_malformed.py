"""Every API path answers malformed input with 400 or 413 in the platform's shape, never 500: a corpus of broken
bodies, each sent with each method to each path (through Django's test client, then through the ASGI
application that uvicorn serves)."""

from __future__ import annotations

import json

import pytest
from django.urls import URLPattern, URLResolver

from accounts.models import ApiKey
from console import api_urls

from .asgi_support import asgi_exchange
from .jobs_support import chat_lines, make_dataset

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
BIG = 3 * 2**20  # over DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MiB)

# (content type, body)
CORPUS: list[tuple[str, bytes]] = [
    ("application/json", b"[" * 200_000),
    ("application/json", b'{"a":' * 100_000),
    ("application/json", b"{" + b'"model": "x", ' * 10 + b"}"),
    ("application/json", b"\xff\xfe\x00garbage"),
    ("application/json", b"not json"),
    ("application/json", b"[1, 2, 3]"),
    ("application/json", b'"a string"'),
    ("application/json", b"12345678901234567890123456789"),
    ("application/json", b"null"),
    ("application/json", b"NaN"),
    ("application/json", b'{"model": {"a": 1}, "training_file": [1], "hyperparameters": "x", "instances": "many"}'),
    ("application/json", b'{"model": 5, "training_file": {"x": 1}, "validation_file": 3.5, "suffix": []}'),
    ("application/json", b'{"instances": 1e309, "hyperparameters": {"n_epochs": "lots", "batch_size": -1}}'),
    ("application/json", b'{"instances": null, "request_id": {"a": 1}}'),
    ("application/json", b'{"messages": "hi", "model": null, "stream": "yes", "max_tokens": "x"}'),
    ("application/json", b'{"model": "' + b"x" * 100_000 + b'"}'),
    ("application/json", b'{"a": "\\ud800"}'),
    ("application/json", b"{" + b" " * BIG + b"}"),
    ("multipart/form-data; boundary=zzz", b'--zzz\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc'),
    ("multipart/form-data", b"no boundary at all"),
    (
        "multipart/form-data; boundary=zzz",
        b'--zzz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n--zzz--\r\n',
    ),
    ("application/x-www-form-urlencoded", b"&".join(b"a%d=1" % i for i in range(2000))),
    ("text/plain", b"\x00\x01\x02"),
]


def _paths(patterns, prefix: str = "") -> list[str]:
    out = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            out += _paths(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            out.append(prefix + str(pattern.pattern))
    return out


@pytest.fixture
def targets(alice, tiny_base) -> tuple[list[str], str]:
    """Every API path, its parameters filled with alice's own objects and with names of none."""
    from deployments.services import deployment_create
    from jobs.models import FineTuningJob

    dataset = make_dataset(alice, chat_lines())
    job = FineTuningJob.objects.create(
        owner=alice, base_model=tiny_base, training_dataset=dataset, fine_tuned_model="ft:tiny-test:x:000001"
    )
    deployment = deployment_create(user=alice, model=tiny_base)
    values = {
        "file_id": [dataset.public_id, "file-nope"],
        "job_id": [job.public_id, "job-nope"],
        "deployment_id": [deployment.public_id, "dep-nope"],
        "model": ["ft:tiny-test:x:000001", "nope"],
    }
    paths = []
    for template in _paths(api_urls.urlpatterns):
        filled = [template]
        for name, choices in values.items():
            marker = next((m for m in (f"<str:{name}>", f"<path:{name}>") if m in template), None)
            if marker:
                filled = [path.replace(marker, value) for path in filled for value in choices]
        assert all("<" not in path for path in filled), filled
        paths += ["/api/paas/v4/" + path for path in filled]
    paths.append("/api/paas/v4/no/such/endpoint")
    _key, text = ApiKey.create_for(user=alice, name="corpus")
    return paths, text


def _check(path: str, method: str, content_type: str, body: bytes, status: int, content: bytes, headers) -> None:
    where = f"{method} {path} {content_type} {body[:40]!r}"
    assert status < 500, f"{where}: {status} {content[:300]!r}"
    if status >= 400:
        assert headers.get("content-type", "").startswith("application/json"), f"{where}: {status} not JSON"
        error = json.loads(content)["error"]
        assert error["code"] and error["message"], where


@pytest.mark.django_db
def test_every_api_path_answers_malformed_bodies_without_500(client, targets, settings):
    settings.USER_MAX_DATASETS = settings.USER_MAX_DEPLOYMENTS = settings.USER_MAX_RUNNING_JOBS = 0
    paths, key = targets
    seen = set()
    for path in paths:
        for method in METHODS:
            for content_type, body in CORPUS:
                response = client.generic(
                    method, path, data=body, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {key}"
                )
                content = b"" if response.streaming else response.content
                _check(path, method, content_type, body, response.status_code, content, response.headers)
                seen.add(response.status_code)
    assert 413 in seen and 400 in seen, seen


@pytest.mark.django_db(transaction=True)
def test_through_the_asgi_application_too(targets):
    paths, key = targets
    auth = (b"authorization", f"Bearer {key}".encode())
    bodies = [CORPUS[0], CORPUS[1], CORPUS[3], CORPUS[10], CORPUS[17], CORPUS[18], CORPUS[19]]
    for path in paths:
        for content_type, body in bodies:
            headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()), auth]
            status, response_headers, content, _read = asgi_exchange(path, [body], headers)
            _check(path, "POST", content_type, body, status, content, response_headers)
