"""The public pools and a stuck instance, without server processes: one pool per base model scaling between its
minimum and maximum by the calls in flight and the time since the last call (counted in the real Redis), a call
to an idle pool starting it, and an instance with calls in flight and no token marked stuck and replaced with the
reason in its deployment's events. The live pool on vLLM is in test_serving_vllm.py."""

from __future__ import annotations

import threading
import time

import pytest
from django.utils import timezone

from common.api import ApiError
from common.redis import redis_client
from deployments import inflight, services
from deployments.agent import NodeAgent, Tracked
from deployments.gateway import resolve
from deployments.models import Deployment, DeploymentEvent, Instance, Node

pytestmark = pytest.mark.django_db


@pytest.fixture
def node(db) -> Node:
    return Node.objects.create(name="n1", runtime="vllm", slots=4, omp_threads=1, heartbeat_at=timezone.now())


def _counts(instance_id: int, *, in_flight: int = 0, busy_for: float = 0.0, progress_ago: float | None = None):
    now = time.time()
    with redis_client(1) as client:
        client.delete(inflight.key(instance_id), inflight.busy_key(instance_id), inflight.progress_key(instance_id))
        if in_flight:
            client.set(inflight.key(instance_id), in_flight)
            client.set(inflight.busy_key(instance_id), now - busy_for)
        if progress_ago is not None:
            client.set(inflight.progress_key(instance_id), now - progress_ago)


def _ready(pool: Deployment, node: Node) -> Instance:
    return Instance.objects.create(
        deployment=pool, node=node, runtime="vllm", state="ready", port=1, upstream_model=pool.served_name, api_key="k"
    )


def test_one_pool_per_base_model_scales_with_load_between_its_minimum_and_maximum(tiny_base, node, settings):
    settings.SERVING_POOL_INSTANCES, settings.SERVING_POOL_MAX_INSTANCES = 1, 2
    pool = services.pool_deployment(tiny_base)
    assert pool.kind == "pool" and pool.code == f"public-pool:{tiny_base.code}" and pool.served_name == tiny_base.code
    assert (pool.min_instances, pool.max_instances, pool.desired_instances) == (1, 2, 1)
    assert services.pool_deployment(tiny_base).pk == pool.pk  # one per base model

    services.deployment_reconcile(deployment_id=pool.pk)
    first = Instance.objects.get(deployment=pool)
    assert first.upstream_model == tiny_base.code and first.api_key  # every instance has its own key
    Instance.objects.filter(pk=first.pk).update(state="ready")

    # Each ready instance carrying SERVING_POOL_SCALE_UP_AT calls: one more, never past the maximum.
    _counts(first.pk, in_flight=8, busy_for=1)
    services.deployment_reconcile(deployment_id=pool.pk)
    pool.refresh_from_db()
    assert pool.desired_instances == 2 and Instance.objects.filter(deployment=pool, state="starting").count() == 1
    assert DeploymentEvent.objects.filter(deployment=pool, message__contains="calls in flight").exists()
    Instance.objects.filter(deployment=pool).update(state="ready")
    for instance in Instance.objects.filter(deployment=pool):
        _counts(instance.pk, in_flight=20, busy_for=1)
    services.deployment_reconcile(deployment_id=pool.pk)
    pool.refresh_from_db()
    assert pool.desired_instances == 2

    # Idle for SERVING_POOL_IDLE_SECONDS: one fewer, down to the minimum and no further.
    for instance in Instance.objects.filter(deployment=pool):
        _counts(instance.pk)
    with redis_client(1) as client:
        client.set(inflight.pool_key(pool.pk), time.time() - 3600)
    services.deployment_reconcile(deployment_id=pool.pk)
    pool.refresh_from_db()
    assert pool.desired_instances == 1
    assert Instance.objects.filter(deployment=pool, state="draining").count() == 1
    services.deployment_reconcile(deployment_id=pool.pk)
    pool.refresh_from_db()
    assert pool.desired_instances == 1
    assert DeploymentEvent.objects.filter(deployment=pool, message__contains="No call for").exists()

    # An operator's limits go through the service (the admin's form does the same).
    services.pool_limits(pool=pool, low=0, high=3)
    pool.refresh_from_db()
    assert (pool.min_instances, pool.max_instances, pool.desired_instances) == (0, 3, 1)


def test_a_call_to_an_idle_pool_starts_it_and_says_when_to_come_back(alice, tiny_base, node, settings):
    settings.SERVING_POOL_INSTANCES = 0
    pool = services.pool_deployment(tiny_base)
    assert pool.desired_instances == 0
    with pytest.raises(ApiError) as caught:
        resolve(alice, tiny_base.code)
    assert caught.value.status == 503 and caught.value.code == "model_starting" and caught.value.retry_after > 0
    assert "starting on the public pool" in caught.value.message
    pool.refresh_from_db()
    assert pool.desired_instances == 1
    services.deployment_reconcile(deployment_id=pool.pk)
    assert Instance.objects.filter(deployment=pool, state="starting").count() == 1
    with pytest.raises(ApiError) as again:  # while it starts: the same answer, nothing more started
        resolve(alice, tiny_base.code)
    assert again.value.code == "model_starting" and Deployment.objects.get(pk=pool.pk).desired_instances == 1
    Instance.objects.filter(deployment=pool).update(state="ready", port=1)
    route = resolve(alice, tiny_base.code)
    assert [c.upstream_model for c in route.candidates] == [tiny_base.code] and route.pool_target.code == tiny_base.code


def test_a_pool_call_resolves_its_model_and_route_in_three_queries_four_for_a_fine_tune(
    alice, bob, tiny_base, node, tmp_path, django_assert_num_queries
):
    """The gateway's hot path: a base model's call reads the private deployments (none), the model and the pool
    with its ready instances; a fine-tune's, the base models first (none). Who may call what is unchanged: bob
    does not reach alice's fine-tune, nobody a base model that is not listed."""
    from modelcards.models import BaseModel, FineTunedModel

    tune = FineTunedModel.objects.create(
        code="tiny-test:alice:q1",
        owner=alice,
        base_model=tiny_base,
        method="sft",
        training_type="lora",
        path=str(tmp_path / "adapter"),
    )
    pool = services.pool_deployment(tiny_base)
    Deployment.objects.filter(pk=pool.pk).update(status="running", desired_instances=1, ready_instances=1)
    instance = _ready(pool, node)
    resolve(alice, tiny_base.code)  # what is kept between calls (the model files' verdict) is read once
    with django_assert_num_queries(3):
        route = resolve(alice, tiny_base.code)
    assert (route.deployment_id, [c.instance_id for c in route.candidates]) == (pool.pk, [instance.pk])
    assert route.pool_target is not None and route.pool_target.code == tiny_base.code
    with django_assert_num_queries(4):
        route = resolve(alice, tune.code)
    assert route.deployment_id == pool.pk and route.pool_target.code == tune.code and route.pool_target.is_lora
    with pytest.raises(ApiError) as caught:
        resolve(bob, tune.code)
    assert caught.value.status == 404
    BaseModel.objects.filter(pk=tiny_base.pk).update(is_active=False)
    with pytest.raises(ApiError) as caught:
        resolve(alice, tiny_base.code)
    assert caught.value.status == 404


def test_the_gateways_row_reader_makes_the_models_the_orm_makes(tiny_base):
    """``_row`` reads a base model without the ORM's query building: every field as the ORM converts it (JSON,
    decimals, dates, booleans) on this database."""
    from deployments.gateway import _row
    from modelcards.models import BaseModel

    assert _row(BaseModel, "code = %s", ["no-such-model"]) is None
    for expected in BaseModel.objects.all():
        got = _row(BaseModel, "code = %s", [expected.code])
        assert isinstance(got, BaseModel) and not got._state.adding
        for field in BaseModel._meta.concrete_fields:
            value, want = getattr(got, field.attname), getattr(expected, field.attname)
            assert (type(value), value) == (type(want), want), field.name


def test_calls_in_flight_with_no_token_mark_an_instance_stuck_and_it_is_replaced(tiny_base, node, settings):
    settings.SERVING_STALL_SECONDS = 60
    pool = services.pool_deployment(tiny_base)
    instance = _ready(pool, node)
    agent, tracked = NodeAgent(name="n1", slots=1, omp_threads=1), Tracked(instance.pk, 0, 1)

    _counts(instance.pk)  # idle
    assert agent._stuck(instance, tracked) == ""
    _counts(instance.pk, in_flight=2, busy_for=30)  # busy, but not for long
    assert agent._stuck(instance, tracked) == ""
    _counts(instance.pk, in_flight=2, busy_for=300, progress_ago=5)  # busy for long, tokens still coming
    assert agent._stuck(instance, tracked) == ""
    _counts(instance.pk, in_flight=2, busy_for=300, progress_ago=200)  # nothing for 200 s
    why = agent._stuck(instance, tracked)
    assert why.startswith("Stuck: 2 calls in flight and no token produced for 200 s"), why

    # The agent marks it unhealthy with that reason; the reconciler replaces it and says why.
    assert agent._mark(instance, "unhealthy", error=why)
    services.deployment_reconcile(deployment_id=pool.pk)
    assert Instance.objects.get(pk=instance.pk).state == "stopping"
    event = DeploymentEvent.objects.filter(deployment=pool, message__contains="is unhealthy").first()
    assert event is not None and "no token produced" in event.message


def test_the_gateway_counts_when_an_instance_went_busy_and_when_it_last_produced(db):
    from asgiref.sync import async_to_sync

    instance_id = 987654
    _counts(instance_id)

    pool_id = 987653
    with redis_client(1) as client:
        client.delete(inflight.pool_key(pool_id))

    async def calls():
        await inflight.acquire(instance_id)
        await inflight.acquire(instance_id, pool_id)  # a pool's call: the pool is noted as called, too
        await inflight.release(instance_id)
        with redis_client(1) as client:
            assert client.get(inflight.busy_key(instance_id)) is not None  # one still in flight
        await inflight.progress(instance_id)
        await inflight.release(instance_id)

    async_to_sync(calls)()
    with redis_client(1) as client:
        assert inflight.in_flight(client, instance_id) == 0
        assert client.get(inflight.busy_key(instance_id)) is None  # idle again: nothing to judge
        assert client.get(inflight.progress_key(instance_id)) is not None
        assert inflight.stalled_for(client, instance_id) == 0.0
        assert time.time() - inflight.pool_last_call(client, pool_id) < 60


def test_a_node_that_cannot_run_vllm_serves_with_transformers_and_says_why(tmp_path, settings):
    from deployments.runtimes import choose

    settings.VLLM_PYTHON = ""
    runtime, note = choose("auto")
    assert runtime == "transformers" and "vLLM is not installed" in note
    # A vLLM that dies on this CPU (an instruction it lacks: SIGILL) or fails to import.
    crashing = tmp_path / "python"
    crashing.write_text("#!/bin/sh\nkill -ILL $$\n")
    crashing.chmod(0o700)
    settings.VLLM_PYTHON = str(crashing)
    runtime, note = choose("auto")
    assert runtime == "transformers" and "killed by signal 4" in note and "transformers serve" in note
    failing = tmp_path / "python2"
    failing.write_text("#!/bin/sh\necho 'ImportError: no CPU backend' >&2\nexit 1\n")
    failing.chmod(0o700)
    settings.VLLM_PYTHON = str(failing)
    runtime, note = choose("auto")
    assert runtime == "transformers" and "ImportError: no CPU backend" in note
    assert choose("transformers") == ("transformers", "") and choose("vllm") == ("vllm", "")


def test_a_fine_tune_goes_to_an_instance_that_holds_its_adapter_else_the_least_busy(db):
    from asgiref.sync import async_to_sync

    from deployments import adapters
    from deployments.gateway import Candidate, _order

    one, two, three = (Candidate(i, f"http://h:{i}", "vllm", "base", "k") for i in (7001, 7002, 7003))
    for candidate, busy in ((one, 0), (two, 5), (three, 2)):
        _counts(candidate.instance_id, in_flight=busy, busy_for=1)
    with redis_client(1) as client:
        for candidate in (one, two, three):
            client.delete(adapters.key(candidate.instance_id))
        client.zadd(adapters.key(two.instance_id), {"tune-a": time.time()})
        client.zadd(adapters.key(three.instance_id), {"tune-a": time.time()})

    order = async_to_sync(_order)
    assert order([one, two, three], "tune-a") == [three, two, one]  # holders first, least busy among them
    assert order([one, two, three], "tune-b") == [one, three, two]  # nobody holds it: least busy
    assert order([one, two, three]) == [one, three, two]  # a base model: least busy
    for candidate in (one, two, three):
        _counts(candidate.instance_id)


@pytest.mark.django_db(transaction=True)  # the gateway reads the rows from its own thread
def test_a_call_waiting_for_a_starting_pool_ends_when_its_work_is_gone(alice, tiny_base, node, settings):
    """An evaluation waits for an idle pool to start (up to 10 minutes); if its task is deleted meanwhile it stops
    at once, instead of waking the pool again and again for work nobody wants."""
    from experience.services import NoLongerWanted, chat_complete

    settings.SERVING_POOL_INSTANCES = 0
    asked = []
    started = time.monotonic()
    outcome = []

    def evaluation_worker():  # as in the Celery worker: a thread with no event loop running (Playwright's may be)
        try:
            chat_complete(
                user=alice,
                body={"model": tiny_base.code, "messages": [{"role": "user", "content": "hi"}]},
                wanted=lambda: asked.append(1) or False,
            )
        except Exception as exc:  # noqa: BLE001 - the assertion below says which
            outcome.append(exc)

    worker = threading.Thread(target=evaluation_worker)
    worker.start()
    worker.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], NoLongerWanted), outcome
    assert asked == [1] and time.monotonic() - started < 5
    assert services.pool_deployment(tiny_base).desired_instances == 1  # the one call did wake it
