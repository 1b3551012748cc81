"""The chat gateway's ASGI path checks the key before it reads a body (an address guessing keys gets 429, as on
the rest of the API), reads at most the configured size, and answers malformed bodies with 400 in the platform's
shape (never 500). The playground's path shares the bound."""

from __future__ import annotations

import json

import pytest

from accounts.models import ApiKey

from .asgi_support import asgi_call, asgi_exchange, run_async
from .conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)
CHAT = "/api/paas/v4/chat/completions"
MIB = 2**20


def call(path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]]):
    """One JSON request through the ASGI application: (status, JSON body, body chunks the app read)."""
    status, body, read = asgi_call(path, chunks, [(b"content-type", b"application/json"), *headers])
    return status, json.loads(body), read


def _key() -> bytes:
    return f"Bearer {ApiKey.create_for(user=make_user('alice'), name='t')[1]}".encode()


def test_the_suite_runs_with_async_safety_on():
    """A blocking ORM call made from async code (the gateway's, the playground's) fails its test: the suite does not
    set DJANGO_ALLOW_ASYNC_UNSAFE (only a browser test's module does, tests/conftest.py, while Playwright runs)."""
    from django.core.exceptions import SynchronousOnlyOperation

    async def blocking():
        return ApiKey.objects.count()

    with pytest.raises(SynchronousOnlyOperation):
        run_async(blocking)


def test_a_huge_body_without_a_key_is_refused_before_any_of_it_is_read():
    chunk = b"[" * MIB
    status, body, read = call(CHAT, [chunk] * 300, [(b"content-length", str(300 * MIB).encode())])
    assert status == 401 and read == 0 and body["error"]["code"] == "1001"
    status, body, read = call(CHAT, [chunk] * 300, [(b"authorization", b"Bearer nope.nope")])
    assert status == 401 and read == 0 and body["error"]["message"] == "The API key is invalid."


def test_wrong_keys_at_the_chat_path_get_429_before_any_body_is_read_and_other_addresses_are_not_held(settings):
    """Failed authentications at the chat path count per client address (scope["client"]) like the rest of the
    API's, in the same count: past API_AUTH_FAILURES_PER_MINUTE the address gets 429 with Retry-After, without its
    body being read, even with the right key, on every API path; a right key from another address still works."""
    settings.API_AUTH_FAILURES_PER_MINUTE = 3
    right = _key()
    wrong = right.split(b".")[0] + b".wrong"
    raw = json.dumps({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}).encode()

    def chat(authorization: bytes, address: str):
        status, headers, body, read = asgi_exchange(
            CHAT, [raw], [(b"authorization", authorization)], client=(address, 40000)
        )
        return status, headers, json.loads(body), read

    def guess(address: str):
        statuses = [chat(wrong, address)[0] for _i in range(3)]
        return statuses, chat(wrong, address)

    statuses, (status, headers, body, read) = guess("10.3.0.1")
    if status != 429:  # the minute turned between the guesses: the window is new, go again
        statuses, (status, headers, body, read) = guess("10.3.0.1")
    assert statuses == [401, 401, 401]
    assert status == 429 and read == 0, body
    assert body["error"]["code"] == "1305"
    assert "More than 3 failed authentications a minute from 10.3.0.1" in body["error"]["message"]
    assert 1 <= int(headers["retry-after"]) <= 61 and "x-should-retry" not in headers
    # The right key waits too from that address, its body unread, and so does the rest of the API.
    status, _headers, body, read = chat(right, "10.3.0.1")
    assert status == 429 and read == 0 and body["error"]["code"] == "1305"
    status, _headers, files, _read = asgi_exchange(
        "/api/paas/v4/files", [b""], [(b"authorization", right)], method="GET", client=("10.3.0.1", 40001)
    )
    assert status == 429 and json.loads(files)["error"]["code"] == "1305"
    # Another address is not held: its right key gets through to the model lookup.
    status, _headers, body, _read = chat(right, "10.3.0.2")
    assert status == 404 and body["error"]["code"] == "model_not_found", body


def test_with_a_key_a_body_over_the_limit_gets_413_declared_or_streamed(settings):
    settings.SERVING_MAX_BODY_MB = 1
    key = _key()
    status, body, read = call(CHAT, [b"{}"], [(b"authorization", key), (b"content-length", str(50 * MIB).encode())])
    assert status == 413 and read == 0 and "larger than the limit of 1 MiB" in body["error"]["message"]
    chunk = b" " * (64 * 1024)
    status, body, read = call(CHAT, [chunk] * 200, [(b"authorization", key)])  # chunked: no Content-Length
    assert status == 413 and read == MIB // len(chunk) + 1  # cut at the chunk that crossed the limit


def test_malformed_bodies_get_400_in_the_platforms_shape_never_500():
    key = _key()
    for raw in (b"[" * 200_000, b'{"a":' * 100_000, b"\xff\xfe", b"not json", b"[1, 2]", b'"text"'):
        status, body, _read = call(CHAT, [raw], [(b"authorization", key)])
        assert status == 400 and body["error"]["code"] == "1210", (raw[:20], body)
    status, body, _read = call(CHAT, [b'{"model": "nope", "messages": []}'], [(b"authorization", key)])
    assert status == 404 and body["error"]["code"] == "model_not_found"


def test_the_playground_path_reads_at_most_the_limit_too(settings):
    settings.SERVING_MAX_BODY_MB = 1
    chunk = b" " * (64 * 1024)
    status, body, read = call("/console/playground/chat/", [chunk] * 200, [])
    assert status == 413 and read == MIB // len(chunk) + 1 and "larger than the limit" in body["error"]["message"]


# ---------------------------------------------------------------- max_tokens against the model's context


def _route(tiny_model_dir, context: int = 256):
    from deployments.gateway import Route

    return Route("tiny", 1, None, context_length=context, tokenizer_folder=str(tiny_model_dir))


def _prompt(tiny_model_dir, messages) -> int:
    from datasets.tokenizer import counting_tokenizer_from_folder

    tokenizer = counting_tokenizer_from_folder(str(tiny_model_dir))
    return tokenizer.count([tokenizer.render(messages, add_generation_prompt=True)])[0]


def test_max_tokens_defaults_and_is_capped_to_the_context_left_after_the_prompt(tiny_model_dir, settings):
    from deployments.gateway import limit_generation

    settings.SERVING_DEFAULT_MAX_TOKENS = 100
    messages = [{"role": "user", "content": "Hello there"}]
    prompt = _prompt(tiny_model_dir, messages)
    body = {"messages": messages}
    limit_generation(_route(tiny_model_dir), body)
    assert body["max_tokens"] == 100  # the default
    body = {"messages": messages, "max_tokens": 10**12}
    limit_generation(_route(tiny_model_dir), body)
    assert body["max_tokens"] == 256 - prompt  # what the context has room for
    body = {"messages": messages, "max_completion_tokens": 7}
    limit_generation(_route(tiny_model_dir), body)
    assert body["max_tokens"] == 7 and "max_completion_tokens" not in body


def test_a_prompt_longer_than_the_context_and_bad_values_are_400_before_any_work(tiny_model_dir):
    from common.api import ApiError
    from deployments.gateway import limit_generation

    messages = [{"role": "user", "content": "word " * 400}]
    with pytest.raises(ApiError) as caught:
        limit_generation(_route(tiny_model_dir), {"messages": messages})
    prompt = _prompt(tiny_model_dir, messages)
    assert caught.value.status == 400 and f"The prompt is {prompt} tokens long" in caught.value.message
    assert "context of 256 tokens" in caught.value.message and caught.value.param == "messages"
    hello = [{"role": "user", "content": "hi"}]
    for bad in (0, -5, 1.5, "10", True):
        with pytest.raises(ApiError) as caught:
            limit_generation(_route(tiny_model_dir), {"messages": hello, "max_tokens": bad})
        assert caught.value.status == 400 and caught.value.param == "max_tokens"
    for bad in (None, [], "hi", [1, 2]):
        with pytest.raises(ApiError) as caught:
            limit_generation(_route(tiny_model_dir), {"messages": bad})
        assert caught.value.status == 400 and caught.value.param == "messages"


# ---------------------------------------------------------------- requests a minute per key, calls at once per user


def _unreachable_deployment(owner):
    """A running deployment whose one ready instance listens nowhere: an admitted call ends in a 503 at once."""
    from datetime import timedelta

    from django.utils import timezone

    from deployments.models import Deployment, Instance, Node
    from modelcards.models import BaseModel

    node = Node.objects.update_or_create(name="nowhere", defaults={"heartbeat_at": timezone.now() + timedelta(1)})[0]
    deployment = Deployment.objects.create(
        owner=owner,
        code=f"nowhere-{owner.pk}",
        status="running",
        base_model=BaseModel.objects.order_by("pk").first(),
        desired_instances=1,
        ready_instances=1,
    )
    Instance.objects.create(
        deployment=deployment, node=node, runtime="transformers", state="ready", port=9, upstream_model="x"
    )
    return deployment


def test_requests_a_minute_per_key_get_429_with_retry_after_and_another_key_is_not_held(settings, tiny_base):
    from deployments import limits

    settings.SERVING_REQUESTS_PER_MINUTE = 2
    alice = make_user("alice")
    deployment = _unreachable_deployment(alice)
    first, second = (ApiKey.create_for(user=alice, name=n)[1] for n in ("k1", "k2"))
    raw = json.dumps({"model": deployment.code, "messages": [{"role": "user", "content": "hi"}]}).encode()

    def chat(key: str):
        status, headers, body, _read = asgi_exchange(CHAT, [raw], [(b"authorization", f"Bearer {key}".encode())])
        return status, headers, json.loads(body)

    statuses = [chat(first)[0] for _i in range(2)]
    status, headers, body = chat(first)
    if status != 429:  # the minute turned between the calls: the window is new, go again
        statuses = [chat(first)[0]]
        status, headers, body = chat(first)
    assert statuses[0] == 503 and status == 429 and body["error"]["code"] == "1303"
    assert 1 <= int(headers["retry-after"]) <= 61 and "2 requests a minute" in body["error"]["message"]
    assert chat(second)[0] == 503  # the limit is the key's

    from deployments.inflight import async_client

    async def running() -> int:
        return int(await async_client().get(limits._user_key(alice.pk)) or 0)

    assert run_async(running) == 0  # every call that was let in has left


def test_calls_at_once_per_user_get_429_and_another_user_is_not_held(settings):

    from common.api import ApiError
    from deployments import limits

    settings.SERVING_CONCURRENT_PER_USER = 2
    alice, bob = make_user("alice"), make_user("bob")

    async def scenario():
        await limits.enter(alice.pk, "a1")
        await limits.enter(alice.pk, "a2")
        with pytest.raises(ApiError) as caught:
            await limits.enter(alice.pk, "a3")
        await limits.enter(bob.pk, "b1")  # bob's calls are his own
        await limits.leave(alice.pk)
        await limits.enter(alice.pk, "a1")  # one finished: room again
        for user in (alice, alice, bob):
            await limits.leave(user.pk)
        return caught.value

    error = run_async(scenario)
    assert error.status == 429 and error.code == "1302" and error.retry_after == 1
    assert error.response()["Retry-After"] == "1"


def test_a_call_its_route_refuses_is_counted_in_the_minute_and_leaves_at_once(settings, tiny_base):
    """An API key's call is admitted (Redis) while its route is found (the database, in a thread): a call the
    route refuses (no such model) answers the route's error, counts in the key's minute, and is not left running."""
    from deployments import limits
    from deployments.inflight import async_client

    settings.SERVING_REQUESTS_PER_MINUTE = 2
    alice = make_user("alice")
    deployment = _unreachable_deployment(alice)
    key = ApiKey.create_for(user=alice, name="k")[1]

    def chat(model: str) -> tuple[int, str]:
        raw = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
        status, _headers, body, _read = asgi_exchange(CHAT, [raw], [(b"authorization", f"Bearer {key}".encode())])
        return status, json.loads(body)["error"]["code"]

    def minute() -> list[tuple[int, str]]:
        return [chat("no-such-model"), chat("no-such-model"), chat("no-such-model"), chat(deployment.code)]

    answers = minute()
    if answers[3][0] != 429:  # the minute turned between the calls: the window is new, go again
        answers = minute()
    assert answers == [(404, "model_not_found")] * 3 + [(429, "1303")]  # the route's error first, then the count's

    async def running() -> int:
        return int(await async_client().get(limits._user_key(alice.pk)) or 0)

    assert run_async(running) == 0
