"""The gateway's cached routes (deployments/routecache.py): a known caller's next call finds its route with no query;
whatever a route is read from, once changed and committed, makes every process resolve it again (a cancelled
deployment, a stopped instance, a deleted fine-tune); an instance's health counters do not; one user's cached route
is never another's. Transactional: the changes commit, as in production, so the generation in Redis moves."""

from __future__ import annotations

import asyncio

import pytest
from django.utils import timezone

from common.api import ApiError
from common.redis import redis_client
from deployments import gateway, routecache, services, states
from deployments.models import Instance, InstanceState, Node
from modelcards.models import FineTunedModel
from modelcards.services import fine_tuned_model_delete

from .asgi_support import run_async

pytestmark = pytest.mark.django_db(transaction=True)
BODY = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def node(db) -> Node:
    return Node.objects.create(name="n1", runtime="vllm", slots=4, omp_threads=1, heartbeat_at=timezone.now())


RESOLVED: list[str] = []


@pytest.fixture(autouse=True)
def _count_resolves(monkeypatch):
    resolve = gateway.resolve

    def counted(user, code):
        RESOLVED.append(code)
        return resolve(user, code)

    monkeypatch.setattr(gateway, "resolve", counted)
    RESOLVED.clear()


@pytest.fixture(autouse=True)
def _no_reconciles(monkeypatch):
    """These rows commit, and a session's Celery worker (started by an earlier test module) would reconcile them
    beside the test: an idle pool stopped, its hand-made ready instance with it, before the route is read."""
    monkeypatch.setattr(services, "enqueue_on_commit", lambda *args, **kwargs: None)


def route(user, code: str) -> tuple[gateway.Route, int]:
    """The route a known caller's call gets, and how many times the database was asked for it (0: cached)."""
    before = len(RESOLVED)
    found = run_async(lambda: gateway._known_callers_route(user, code, dict(BODY), 64))
    return found, len(RESOLVED) - before


def generation() -> bytes:
    with redis_client(1) as client:
        return client.get(routecache.GENERATION_KEY) or b"0"


def ready_deployment(user, base, node):
    deployment = services.deployment_create(user=user, model=base, instances=1)
    services.deployment_reconcile(deployment_id=deployment.pk)
    instance = Instance.objects.get(deployment=deployment)
    assert states.instance_move(instance, InstanceState.READY, port=1234)
    services.deployment_reconcile(deployment_id=deployment.pk)  # settled (running): a later reconcile changes nothing
    return deployment, instance


def test_a_known_callers_route_is_read_once_then_kept_until_its_deployment_changes(alice, bob, tiny_base, node):
    deployment, instance = ready_deployment(alice, tiny_base, node)
    first, resolved = route(alice, deployment.code)
    assert first.candidates[0].url.endswith(":1234") and resolved == 1
    again, resolved = route(alice, deployment.code)
    assert again is first and resolved == 0

    # One user's cached route is never another's.
    with pytest.raises(ApiError) as caught:
        route(bob, deployment.code)
    assert caught.value.status == 404

    # Health counters (ready -> ready) change nothing a route reads: still cached.
    before = generation()
    assert states.instance_move(instance, InstanceState.READY, health_failures=1)
    again, resolved = route(alice, deployment.code)
    assert generation() == before and again is first and resolved == 0

    # The instance drains: the generation moves, and the next call is resolved again (no ready instance).
    assert states.instance_move(instance, InstanceState.DRAINING, drain_started_at=timezone.now())
    moved = generation()
    assert moved != before
    with pytest.raises(ApiError) as caught:
        route(alice, deployment.code)
    assert caught.value.status == 503

    # Another process's route kept under the old generation is not used either.
    key = routecache.key_of(alice, deployment.code)
    routecache.put(key, before, first)
    assert routecache.get(key, moved) is None and routecache.get(key, before) is first


def test_a_cancelled_deployment_answers_404_at_once(alice, tiny_base, node):
    deployment, _instance = ready_deployment(alice, tiny_base, node)
    assert route(alice, deployment.code)[0].deployment_id == deployment.pk
    assert route(alice, deployment.code)[1] == 0
    services.deployment_cancel(deployment=deployment)
    with pytest.raises(ApiError) as caught:
        route(alice, deployment.code)
    assert caught.value.status == 404 and "cancelled" in caught.value.message


def test_a_deleted_fine_tune_is_not_routed_to_its_base_pool(alice, tiny_base, node, tmp_path):
    tiny_base.public_pool = True
    tiny_base.save(update_fields=["public_pool"])
    pool = services.pool_deployment(tiny_base)
    Instance.objects.create(
        deployment=pool, node=node, runtime="vllm", state="ready", port=1, upstream_model=pool.served_name, api_key="k"
    )
    tune = FineTunedModel.objects.create(
        code=f"{tiny_base.code}:alice:t1",
        owner=alice,
        base_model=tiny_base,
        method="sft",
        training_type="lora",
        path=str(tmp_path / "adapter"),
    )
    found, _resolved = route(alice, tune.code)
    assert found.pool_target is not None and found.pool_target.is_lora
    before = generation()
    fine_tuned_model_delete(model=tune)
    assert generation() != before
    with pytest.raises(ApiError) as caught:
        route(alice, tune.code)
    assert caught.value.status == 404


def test_a_prompt_too_long_is_refused_from_a_cached_route_too(alice, tiny_base, node):
    """The body is checked against the route at every call, cached or not."""
    deployment, _instance = ready_deployment(alice, tiny_base, node)
    found, _resolved = route(alice, deployment.code)
    assert found.context_length and route(alice, deployment.code)[1] == 0
    long = {"messages": [{"role": "user", "content": "word " * (found.context_length + 10)}]}
    for size in (64, 10**6):  # checked on the event loop, and (a big body) in a thread
        with pytest.raises(ApiError) as caught:
            run_async(lambda size=size: gateway._known_callers_route(alice, deployment.code, dict(long), size))
        assert caught.value.status == 400 and "tokens long" in caught.value.message
    body = dict(BODY, max_tokens=10**9)
    run_async(lambda: gateway._known_callers_route(alice, deployment.code, body, 64))
    assert body["max_tokens"] < found.context_length and RESOLVED == [deployment.code]


def test_calls_that_miss_at_once_resolve_the_route_once(alice, tiny_base, node):
    """Eight calls of one caller and model arriving together after the generation moved: one resolves in a thread,
    the others wait for its route (not eight hops and eight sets of queries)."""
    deployment, _instance = ready_deployment(alice, tiny_base, node)
    current = generation()

    async def burst():
        return await asyncio.gather(
            *[gateway._known_callers_route(alice, deployment.code, dict(BODY), 64, current) for _ in range(8)]
        )

    routes = run_async(burst)
    assert RESOLVED == [deployment.code] and all(found is routes[0] for found in routes)
    assert not gateway._resolving  # nothing left waiting

    # A refused first call (its prompt too long) keeps nothing: the others resolve their own and get their route.
    routecache.forget()
    long = {"messages": [{"role": "user", "content": "word " * (routes[0].context_length + 10)}]}

    async def mixed():
        return await asyncio.gather(
            gateway._known_callers_route(alice, deployment.code, dict(long), 64, current),
            *[gateway._known_callers_route(alice, deployment.code, dict(BODY), 64, current) for _ in range(3)],
            return_exceptions=True,
        )

    first, *others = run_async(mixed)
    assert isinstance(first, ApiError) and first.status == 400
    assert all(isinstance(found, gateway.Route) for found in others) and not gateway._resolving
