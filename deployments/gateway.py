"""The chat completions gateway: ``POST /api/paas/v4/chat/completions`` (async, under ASGI).

It resolves the caller's model code (a deployment's own code, the caller's fine-tune, or a base model) to the
ready instances that serve it, picks the least busy, forwards the request with httpx and streams the server-sent
events straight through, rewritten to the platform's shape: ``model`` is the caller's code, ``request_id`` is
set, usage rides on the last chunk and the stream ends with ``data: [DONE]``. A connection failure before the
first byte is retried on the next instance. Every call is recorded (``ApiCall``) after it ends, off the
request's path.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import queue
import random
import re
import sys
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from accounts.api import authenticate_throttled_async
from common.api import ApiError, ClientGone, read_asgi_body
from common.db import connection_checked
from common.error_codes import BAD_BODY, BAD_PARAM, PROMPT_TOO_LONG
from console.errors import last_exception
from modelcards.models import BaseModel, FineTunedModel
from modelcards.weights import WeightsMissing

from . import adapters, conf, inflight, limits, routecache
from .models import ApiCall, Deployment, DeploymentKind, DeploymentStatus, Instance, InstanceState
from .runtimes import get_runtime
from .targets import Target, base_folder, is_prepared, prepare, target_of

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
POOL_START_SECONDS = 30  # what a caller of a pool that is starting is told to wait


@dataclass(frozen=True)
class Candidate:
    instance_id: int
    url: str
    runtime: str
    upstream_model: str
    api_key: str


@dataclass
class Route:
    code: str
    user_id: int
    deployment_id: int | None
    candidates: list[Candidate] = field(default_factory=list)
    pool_target: Target | None = None  # the folder a public-pool instance is asked to load
    context_length: int = 0  # the served model's context in tokens (0: unknown, not checked)
    tokenizer_folder: str | None = None  # where its tokenizer is, to count a prompt


@dataclass(frozen=True)
class ModelFacts:
    """What the gateway checks a request against: the base model's context and tokenizer folder."""

    context_length: int
    tokenizer_folder: str | None

    @classmethod
    def of(cls, base: BaseModel) -> ModelFacts:
        try:
            folder = base_folder(base)
        except WeightsMissing:
            folder = None
        return cls(conf.served_context(base.context_length), str(folder) if folder is not None else None)


_deployment_facts: dict[int, ModelFacts] = {}


def deployment_facts(deployment_id: int) -> ModelFacts:
    """A deployment's model facts (a deployment never changes model: kept once read)."""
    facts = _deployment_facts.get(deployment_id)
    if facts is None:
        deployment = Deployment.objects.select_related("base_model", "fine_tuned_model__base_model").get(
            pk=deployment_id
        )
        model = deployment.model
        base = model if isinstance(model, BaseModel) else model.base_model
        if len(_deployment_facts) > 10_000:
            _deployment_facts.clear()
        facts = _deployment_facts[deployment_id] = ModelFacts.of(base)
    return facts


def _not_found(code: str) -> ApiError:
    return ApiError(
        404, "model_not_found", f"The model {code} does not exist or you do not have access to it.", "model"
    )


def _deploy_first(code: str, why: str) -> ApiError:
    url = reverse("deployments:create") + f"?model={code}"
    return ApiError(
        400,
        "model_not_deployed",
        f"{why} Deploy it first: create a deployment on the private instances page ({url}) or with "
        f'POST /api/paas/v4/deployments {{"model": "{code}", "instances": 1}}, then call the deployment\'s '
        f"model code.",
        "model",
    )


def _candidates(deployment_id: int) -> list[Candidate]:
    rows = Instance.objects.filter(deployment_id=deployment_id, state=InstanceState.READY).values_list(
        "id", "host", "port", "runtime", "upstream_model", "api_key"
    )
    return [
        Candidate(pk, f"http://{host}:{port}", runtime, upstream, key)
        for pk, host, port, runtime, upstream, key in rows
    ]


def _deployment_route(deployment: Deployment, code: str, user_id: int) -> Route:
    candidates = _candidates(deployment.pk)
    if not candidates:
        raise ApiError(
            503,
            "no_ready_instance",
            (
                f"No instance of {code} is ready yet ({deployment.ready_instances}/"
                f"{deployment.desired_instances} ready, {deployment.get_status_display().lower()}). "
                "Try again shortly."
            ),
            "model",
        )
    facts = deployment_facts(deployment.pk)
    return Route(code, user_id, deployment.pk, candidates, None, facts.context_length, facts.tokenizer_folder)


def _pool_route(model: BaseModel | FineTunedModel, code: str, user_id: int) -> Route:
    """The public pool of the model's base: its ready instances, the model to name or load at them (one query
    while the pool runs; one that is missing, stopped or starting goes through its service)."""
    from .services import pool_code, pool_deployment, pool_wake

    try:
        target = target_of(model)
    except WeightsMissing as exc:
        raise ApiError(
            400, "weights_missing", f"The weights of {code} are not on this server: {exc}", "model"
        ) from None
    rows = _deployment_rows(pool_code(target.base), DeploymentKind.POOL)
    candidates = _ready(rows)
    if candidates and rows[0][2] != DeploymentStatus.CANCELLED:
        facts = ModelFacts.of(target.base)
        return Route(code, user_id, rows[0][0], candidates, target, facts.context_length, facts.tokenizer_folder)
    pool = pool_deployment(target.base)  # made at the first need; a cancelled one comes back
    candidates = _candidates(pool.pk)
    if not candidates:
        if pool.desired_instances == 0 and pool_wake(pool):
            raise ApiError(
                503,
                "model_starting",
                f"{target.base.code} is starting on the public pool (it was idle, so its instances had stopped); "
                f"try again in about {POOL_START_SECONDS} s.",
                "model",
                retry_after=POOL_START_SECONDS,
            )
        starting = pool.instances.filter(state=InstanceState.STARTING).exists()
        raise ApiError(
            503,
            "model_starting" if starting else "no_ready_instance",
            (
                f"{target.base.code} is starting on the public pool; try again in about {POOL_START_SECONDS} s."
                if starting
                else "The public pool has no ready instance right now"
                + (f" ({pool.status_reason})" if pool.status_reason else "")
                + "; try again shortly, or deploy the model."
            ),
            "model",
            retry_after=POOL_START_SECONDS if starting else 0,
        )
    facts = ModelFacts.of(target.base)
    return Route(code, user_id, pool.pk, candidates, target, facts.context_length, facts.tokenizer_folder)


def _deployment_rows(code: str, kind: str = DeploymentKind.PRIVATE) -> list[tuple]:
    """A deployment by its code with its ready instances, in one query (the hot path of every call: the ORM's
    query building costs more than the query itself). Columns: the deployment's id, owner, status, status
    reason, ready and desired counts; then each ready instance's (``_ready``), or NULLs."""
    deployments, instances = Deployment._meta.db_table, Instance._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT d.id, d.owner_id, d.status, d.status_reason, d.ready_instances, d.desired_instances, "  # noqa: S608
            f"i.id, i.host, i.port, i.runtime, i.upstream_model, i.api_key FROM {deployments} d "
            f"LEFT JOIN {instances} i ON i.deployment_id = d.id AND i.state = %s "
            f"WHERE d.code = %s AND d.kind = %s",
            [InstanceState.READY, code, kind],
        )
        return cursor.fetchall()


def _ready(rows: list[tuple]) -> list[Candidate]:
    """The ready instances in ``_deployment_rows``."""
    return [Candidate(row[6], f"http://{row[7]}:{row[8]}", *row[9:12]) for row in rows if row[6]]


@functools.cache
def _select(model: type) -> tuple[str, list[str], list[tuple]]:
    """What ``_row`` reads of ``model``: its columns' SELECT, their attribute names, and the database's converters
    of each column that has any (JSON, decimals, dates: what the ORM's compiler applies), worked out once."""
    meta = model._meta
    quote = connection.ops.quote_name
    columns = [field.get_col(meta.db_table) for field in meta.concrete_fields]
    converters = []
    for i, column in enumerate(columns):
        functions = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if functions:
            converters.append((i, column, functions))
    select = ", ".join(f"{quote(meta.db_table)}.{quote(field.column)}" for field in meta.concrete_fields)
    return f"SELECT {select} FROM {quote(meta.db_table)}", [f.attname for f in meta.concrete_fields], converters


def _row(model: type, where: str, params: list):
    """The first row of ``model`` ``WHERE where``, as the ORM would make it, without its query building (on a
    busy gateway that was 1.2 ms of the 3 ms before a pool call's request left, for a query of 0.05 ms)."""
    select, names, converters = _select(model)
    with connection.cursor() as cursor:
        cursor.execute(f"{select} WHERE {where} LIMIT 1", params)
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for i, column, functions in converters:
        for function in functions:
            values[i] = function(values[i], column, connection)
    return model.from_db(connection.alias, names, values)


def _model_of_code(code: str) -> BaseModel | FineTunedModel | None:
    """The base model or live fine-tune called ``code`` (base models first: a fine-tune's code never equals one's,
    jobs.services makes sure, and the public pool's calls are mostly of base models)."""
    base = _row(BaseModel, "code = %s", [code])
    if base is not None:
        return base
    return FineTunedModel.objects.live().filter(code=code).select_related("base_model").first()


def resolve(user, code) -> Route:
    """The instances that may serve ``code`` for ``user`` (its ``pk`` and ``is_staff`` are read), or an ApiError
    (404, 400 deploy first, 503). A private deployment's call costs one query, a base model's on its public pool
    three, a fine-tune's on its base's pool four (tests/test_serving_pool.py counts them)."""
    if not isinstance(code, str) or not code.strip():
        raise ApiError(400, BAD_PARAM, "model is required.", "model")
    rows = _deployment_rows(code)
    if rows:
        deployment_id, owner_id, status, reason, ready, desired = rows[0][:6]
        if owner_id != user.pk:
            raise _not_found(code)
        if status == DeploymentStatus.CANCELLED:
            raise ApiError(404, "model_not_found", f"The deployment {code} was cancelled.", "model")
        if status == DeploymentStatus.FAILED:
            raise ApiError(400, "deployment_failed", f"The deployment {code} failed: {reason}", "model")
        candidates = _ready(rows)
        if not candidates:
            raise ApiError(
                503,
                "no_ready_instance",
                f"No instance of {code} is ready yet ({ready}/{desired} ready, "
                f"{DeploymentStatus(status).label.lower()}). Try again shortly.",
                "model",
            )
        facts = deployment_facts(deployment_id)
        return Route(code, user.pk, deployment_id, candidates, None, facts.context_length, facts.tokenizer_folder)
    model = _model_of_code(code)
    if isinstance(model, BaseModel):
        if not model.is_usable_by(user):
            raise _not_found(code)
        verdict = _servable(model)
        if not verdict:
            raise ApiError(400, "model_not_servable", f"{code} cannot be served here: {verdict.reason}", "model")
        return _pool_route(model, code, user.pk)
    if model is None or model.owner_id != user.pk:
        raise _not_found(code)
    if model.is_lora and model.base_model.public_pool:
        return _pool_route(model, code, user.pk)
    own = (
        Deployment.objects.filter(
            kind=DeploymentKind.PRIVATE, owner_id=user.pk, fine_tuned_model=model, ready_instances__gt=0
        )
        .exclude(status__in=[DeploymentStatus.CANCELLED, DeploymentStatus.FAILED])
        .first()
    )
    if own is not None:
        return _deployment_route(own, code, user.pk)
    why = (
        f"{code} is a full-parameter fine-tune: it is not served from the public pool."
        if not model.is_lora
        else f"LoRA fine-tunes of {model.base_model.code} are not served from the public pool."
    )
    raise _deploy_first(code, why)


_servable_cache: dict[tuple[str, str], tuple[float, object]] = {}


def _servable(base: BaseModel):
    """Whether this server can serve the base model: files read from disk, so kept for a few seconds."""
    key = (base.code, base.weights_location)
    hit = _servable_cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < 10:
        return hit[1]
    verdict = base.capabilities().serve
    _servable_cache[key] = (time.monotonic(), verdict)
    return verdict


def _authorize_and_resolve(code, user, body: dict) -> tuple:
    """The caller and the route of ``code``, and ``body``'s generation limits checked against it (sync: run off
    the event loop). The caller is ``user`` (an API key's, or a session's a console page authenticated); or what
    ``user()`` returns (an authentication that needs the database, done here in the same hop), which may raise
    ApiError."""
    connection_checked()
    if callable(user):
        user = user()
    route = resolve(user, code)
    limit_generation(route, body)
    return user, route


def limit_generation(route: Route, body: dict) -> None:
    """Check ``body`` against what the model can do, before any work, and set ``max_tokens``: the caller's value
    (or SERVING_DEFAULT_MAX_TOKENS) capped to the model's context minus the prompt. A prompt that does not fit
    the context is a 400 naming both lengths."""
    asked = body.get("max_tokens", body.get("max_completion_tokens"))
    if asked is not None and (isinstance(asked, bool) or not isinstance(asked, int) or asked < 1):
        raise ApiError(400, BAD_PARAM, f"max_tokens must be a positive whole number, not {asked!r}.", "max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, BAD_PARAM, "messages must be a non-empty list of message objects.", "messages")
    prompt = _prompt_tokens(route.tokenizer_folder, body) if route.context_length else 0
    if route.context_length and prompt >= route.context_length:
        raise ApiError(
            400,
            PROMPT_TOO_LONG,
            f"The prompt is {prompt} tokens long; {route.code} has a context of {route.context_length} tokens, "
            "which must also hold the answer. Shorten the messages.",
            "messages",
        )
    wanted = asked or conf.default_max_tokens()
    room = route.context_length - prompt if route.context_length else wanted
    body["max_tokens"] = min(wanted, room)
    body.pop("max_completion_tokens", None)


def _prompt_tokens(folder: str | None, body: dict) -> int:
    """The prompt's length in tokens as the model's chat template renders it (0 when the tokenizer is not on
    this machine yet, or the messages do not render: the runtime then says what is wrong)."""
    if not folder or not (Path(folder) / "tokenizer.json").exists():
        return 0
    from datasets.tokenizer import counting_tokenizer_from_folder

    try:
        tokenizer = counting_tokenizer_from_folder(folder)
        text = tokenizer.render(body["messages"], body.get("tools"), add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - an odd message the template refuses: the runtime answers it
        return 0
    return tokenizer.count([text])[0]


# ---------------------------------------------------------------- recording usage, off the request's path

_pending: queue.SimpleQueue = queue.SimpleQueue()
_writer_lock = threading.Lock()
_writer: threading.Thread | None = None


def _write_loop() -> None:
    """Write recorded calls in batches (one INSERT for many calls), off the event loop."""
    while True:
        batch = [_pending.get()]
        time.sleep(0.2)  # let the calls finishing at about the same time join this batch
        while len(batch) < 500:
            try:
                batch.append(_pending.get_nowait())
            except queue.Empty:
                break
        try:
            connection_checked()  # kept between batches (a new SQLite connection each was 5% of the gateway's CPU)
            ApiCall.objects.bulk_create([ApiCall(**fields) for fields in batch])
        except Exception:
            logger.exception("recording %s call(s) failed", len(batch))


def record(**fields) -> None:
    global _writer
    _pending.put(fields)
    if _writer is None or not _writer.is_alive():
        with _writer_lock:
            if _writer is None or not _writer.is_alive():
                _writer = threading.Thread(target=_write_loop, name="usage-writer", daemon=True)
                _writer.start()


# ---------------------------------------------------------------- public-pool folders prepared on first call

_prepare_locks: dict[str, asyncio.Lock] = {}


async def ensure_prepared(target: Target) -> None:
    """A pool model's folder (a base converted, a LoRA merged) is built the first time it is called."""
    if is_prepared(target):
        return
    lock = _prepare_locks.setdefault(target.weights_name, asyncio.Lock())
    async with lock:
        if is_prepared(target):
            return
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "deployments.launch",
            "--prepare",
            target.code,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _err = await asyncio.wait_for(proc.communicate(), timeout=600)
        if proc.returncode != 0 or not is_prepared(target):
            raise ApiError(500, "model_load_failed", prepare_failure(target.code, out.decode("utf-8", "replace")))


def prepare_failure(code: str, output: str) -> str:
    """The caller's message when preparing ``code`` failed: the last exception, with no server path. The output
    (tracebacks, the paths of weights and libraries) goes to the gateway's log, for staff."""
    logger.warning("preparing %s for serving failed:\n%s", code, "\n".join(output.strip().splitlines()[-20:]))
    error = last_exception(output)
    if error:
        return f"Preparing {code} for serving failed: {error}"
    return f"Preparing {code} for serving failed; the operators can read why in the gateway's log."


# ---------------------------------------------------------------- forwarding

# One client per event loop (uvicorn runs one a process), forgotten with its loop: a later loop never gets a
# client bound to a closed one, even where it reuses the old one's id.
_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def http_client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=2.0, read=600.0, write=30.0, pool=30.0),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
    return client


async def _order(candidates: list[Candidate], adapter: str = "") -> list[Candidate]:
    """Least busy first; for a fine-tune served as an adapter, the instances that hold it before the others."""
    if len(candidates) < 2:
        return candidates
    ids = [c.instance_id for c in candidates]
    try:
        busy = await inflight.counts(ids)
        holds = await adapters.resident(ids, adapter) if adapter else [True] * len(ids)
    except Exception:  # Redis away: route at random rather than fail the call
        busy, holds = [0] * len(candidates), [True] * len(candidates)
    keyed = [(not h, b, random.random(), c) for h, b, c in zip(holds, busy, candidates, strict=True)]
    return [c for *_k, c in sorted(keyed, key=lambda t: t[:3])]


async def _upstream_model(route: Route, candidate: Candidate, runtime) -> str:
    """The ``model`` to send to this instance, after making it able to answer for the route's model: a pool's
    vLLM instance loads a fine-tune's adapter (once), a pool's ``transformers serve`` is named the folder (a
    fine-tune merged once)."""
    target = route.pool_target
    if target is None:
        return candidate.upstream_model
    if runtime.adapters_at_run_time:
        if not target.is_lora:
            return candidate.upstream_model
        if not (target.adapter / "adapter_config.json").exists():  # another node's storage: fetched once
            await sync_to_async(prepare, thread_sensitive=False)(target, merge=False)
        await adapters.ensure_loaded(
            http_client(),
            candidate.url,
            runtime.headers(candidate.api_key),
            candidate.instance_id,
            target.weights_name,
            str(target.adapter),
        )
        return target.weights_name
    await ensure_prepared(target)
    return str(target.folder)


async def _open(route: Route, body: dict, stream: bool) -> tuple[Candidate, httpx.Response]:
    """Send to the least busy instance; on a connection failure (nothing sent back yet) try the next."""
    client = http_client()
    last = ""
    adapter = route.pool_target.weights_name if route.pool_target is not None and route.pool_target.is_lora else ""
    pool_id = route.deployment_id if route.pool_target is not None else None  # a pool scales by its calls
    for candidate in await _order(route.candidates, adapter):
        runtime = get_runtime(candidate.runtime)
        await _acquire(candidate.instance_id, pool_id)
        try:
            upstream = await _upstream_model(route, candidate, runtime)
            payload = runtime.request_body({**body, "stream": stream}, upstream)
            request = client.build_request(
                "POST",
                f"{candidate.url}/v1/chat/completions",
                json=payload,
                headers=runtime.headers(candidate.api_key),
            )
            response = await client.send(request, stream=True)
        # Nothing came back yet, so another instance may take the request: a refused connection, or a kept-alive
        # one whose server was killed meanwhile (reset while sending, or before the response's first byte).
        except (
            httpx.ConnectError,
            httpx.ConnectTimeout,
            httpx.RemoteProtocolError,
            httpx.ReadError,
            httpx.WriteError,
        ) as exc:
            await _release(candidate.instance_id)
            last = f"{type(exc).__name__}: {exc}"
            logger.warning("instance %s refused the connection (%s); trying the next", candidate.instance_id, last)
            continue
        except ApiError as exc:
            await _release(candidate.instance_id)
            if exc.status == 502:  # the instance did not answer the adapter load: the next may
                last = exc.message
                continue
            raise
        except httpx.HTTPError as exc:  # a timeout or a broken answer: said in the platform's shape, not a bare 500
            await _release(candidate.instance_id)
            raise ApiError(502, "model_server_error", f"The model server did not answer: {type(exc).__name__}") from exc
        except BaseException:
            await _release(candidate.instance_id)
            raise
        return candidate, response
    raise ApiError(503, "no_ready_instance", f"No instance of {route.code} could be reached ({last}).", "model")


_background: set[asyncio.Task] = set()


async def _count(change, instance_id: int) -> None:
    try:
        await change(instance_id)
    except Exception:
        logger.warning("could not count requests in flight of instance %s", instance_id, exc_info=True)


def _later(coro) -> None:
    """Run ``coro`` beside the call, not in its way (the counts matter to drains, which wait seconds)."""
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _acquire(instance_id: int, pool_id: int | None = None) -> None:
    _later(_count(functools.partial(inflight.acquire, pool_id=pool_id), instance_id))


async def _release(instance_id: int) -> None:
    _later(_count(inflight.release, instance_id))


def _progress(instance_id: int) -> None:
    """The instance produced something (the node agent replaces one that stops producing, SERVING_STALL_SECONDS)."""
    if inflight.progress_due(instance_id):
        _later(_count(inflight.progress, instance_id))


def _upstream_error(status: int, raw: bytes) -> ApiError:
    try:
        data = json.loads(raw)
        detail = data.get("detail") or data.get("error") or data.get("message") or data
        if isinstance(detail, dict):
            detail = detail.get("message") or json.dumps(detail)
    except (ValueError, AttributeError):
        detail = raw.decode("utf-8", "replace")[:500]
    if 400 <= status < 500:
        return ApiError(400, BAD_PARAM, f"The model server refused the request: {detail}")
    return ApiError(500, "model_server_error", f"The model server failed: {detail}")


def _dumps(data) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass
class Reply:
    """What the gateway answers: a status, a content type and a body (bytes, or an async iterator of them)."""

    status: int
    content_type: str
    body: object
    headers: dict = field(default_factory=dict)

    @classmethod
    def error(cls, exc: ApiError) -> Reply:
        response = exc.response()
        headers = {name: response[name] for name in ("x-should-retry", "Retry-After") if response.has_header(name)}
        return cls(exc.status, "application/json", response.content, headers)


async def handle(
    method: str, raw: bytes, request_id_header: str | None, *, user, rate_id=None, routes_generation=None
) -> Reply:
    """One chat completions call for ``user`` (or for what ``user()`` returns, see ``_authorize_and_resolve``),
    within the caller's limits (limits.py; counted under ``rate_id``, else the user's own). Called by the API's
    endpoint with the key's user and id (and the cached routes' generation, read with the key), the playground's
    with its session's user, and evaluations."""
    started = time.perf_counter()
    if method != "POST":
        return Reply.error(ApiError(405, BAD_PARAM, f"Method {method} is not allowed here."))
    try:
        body = json.loads(raw or b"{}")
        if not isinstance(body, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as exc:
        return Reply.error(ApiError(400, BAD_BODY, f"The request body is not valid JSON: {exc}"))
    except RecursionError:
        return Reply.error(ApiError(400, BAD_BODY, "The request body is not valid JSON: it is nested too deeply."))
    request_id = str(body.get("request_id") or request_id_header or uuid.uuid4().hex)
    stream = bool(body.get("stream"))
    code = body.get("model")
    # A caller already known (an API key's) is counted in Redis while the route is found in the thread: the two
    # waits overlap. A call the route refuses is counted in the minute's requests, and leaves at once.
    admission = None if callable(user) else asyncio.ensure_future(limits.enter(user.pk, rate_id or f"user-{user.pk}"))
    try:
        if callable(user):
            caller, route = await sync_to_async(_authorize_and_resolve, thread_sensitive=False)(code, user, body)
        else:
            caller, route = user, await _known_callers_route(user, code, body, len(raw), routes_generation)
    except BaseException as exc:
        if admission is not None:
            await _withdraw(admission, user.pk)
        if isinstance(exc, ApiError):
            return Reply.error(exc)
        raise
    try:
        await (admission if admission is not None else limits.enter(caller.pk, rate_id or f"user-{caller.pk}"))
    except ApiError as exc:
        return Reply.error(exc)
    handed_off = False
    try:
        reply = await _call(caller, route, body, stream, request_id, started)
        if not isinstance(reply.body, bytes):
            reply.body = _leaving(reply.body, caller.pk)  # the stream's end is the call's end
            handed_off = True
        return reply
    finally:
        if not handed_off:
            await limits.leave(caller.pk)


INLINE_CHECK_BYTES = 16 * 1024  # a body this small has its prompt counted on the event loop (well under 1 ms)


async def _known_callers_route(user, code, body: dict, size: int, current: bytes | None = None) -> Route:
    """The route of ``code`` for a caller already authenticated, with ``body`` checked against it: from the
    process's cached routes while they are current (routecache.py: the generation ``current``, read here when
    not given), else resolved in a thread and kept."""
    key = routecache.key_of(user, code)
    if current is None and key is not None:
        current = await routecache.generation()
    route = routecache.get(key, current)
    if route is None and key is not None and current is not None:
        pending = _resolving.get(key)
        if pending is not None and pending.get_loop() is asyncio.get_running_loop():
            await asyncio.wait({pending})  # the same caller and model being resolved by another call: its route
            route = routecache.get(key, current)
    if route is None:
        return await _resolve_and_keep(key, current, code, user, body)
    if size <= INLINE_CHECK_BYTES:
        limit_generation(route, body)
    else:
        await sync_to_async(limit_generation, thread_sensitive=False)(route, body)
    return route


_resolving: dict[routecache.Key, asyncio.Future] = {}


async def _resolve_and_keep(key, current: bytes | None, code, user, body: dict) -> Route:
    """The route resolved in a thread (``body`` checked there) and kept; calls of the same caller and model that
    miss meanwhile wait for it (a burst after the routes' generation moved, or their entry expired, resolves once,
    not once a call: 8 streams at once had 46 of 128 calls each hop to a thread). A call that finds no route
    after the wait (the first's was refused) resolves its own."""
    done = None
    if key is not None and current is not None and key not in _resolving:
        done = _resolving[key] = asyncio.get_running_loop().create_future()
    try:
        _caller, route = await sync_to_async(_authorize_and_resolve, thread_sensitive=False)(code, user, body)
        routecache.put(key, current, route)
        return route
    finally:
        if done is not None:
            del _resolving[key]
            done.set_result(None)


async def _withdraw(admission: asyncio.Future, user_id: int) -> None:
    """Undo an admission of a call that will not run: it leaves, if it was let in."""
    try:
        await admission
    except ApiError:
        return  # refused: nothing was left counted
    await limits.leave(user_id)


async def _leaving(stream, user_id: int):
    try:
        async for part in stream:
            yield part
    finally:
        await stream.aclose()
        await limits.leave(user_id)


async def _call(caller, route: Route, body: dict, stream: bool, request_id: str, started: float) -> Reply:
    """Forward one admitted call to an instance and answer (a Reply whose body streams, for a stream)."""
    code = body.get("model")
    usage = {
        "user_id": caller.pk,
        "model": str(code)[:160],
        "deployment_id": route.deployment_id,
        "request_id": request_id[:128],
        "stream": stream,
    }
    try:
        candidate, response = await _open(route, body, stream)
    except ApiError as exc:
        record(**usage, status_code=exc.status, error=exc.message, latency_ms=(time.perf_counter() - started) * 1000)
        return Reply.error(exc)
    usage["instance_id"] = candidate.instance_id
    if response.status_code >= 400:
        raw = await response.aread()
        await response.aclose()
        await _release(candidate.instance_id)
        error = _upstream_error(response.status_code, raw)
        record(
            **usage, status_code=error.status, error=error.message, latency_ms=(time.perf_counter() - started) * 1000
        )
        return Reply.error(error)
    if not stream:
        try:
            raw = await asyncio.wait_for(response.aread(), _time_left(started))
        except TimeoutError:
            error = _too_slow()
            record(**usage, status_code=error.status, error=error.message, latency_ms=_since(started))
            return Reply.error(error)
        except asyncio.CancelledError:  # the client went away: closing the response cancels the generation
            record(**usage, status_code=499, error="the client closed the connection", latency_ms=_since(started))
            raise
        finally:
            await response.aclose()
            await _release(candidate.instance_id)
        _progress(candidate.instance_id)
        data = json.loads(raw)
        data["model"], data["request_id"] = route.code, request_id
        if not (data.get("usage") or {}).get("completion_tokens"):
            choices = data.get("choices") or [{}]
            text = ((choices[0] or {}).get("message") or {}).get("content") or ""
            data["usage"] = await _count_usage(route.tokenizer_folder, body, [text])
        tokens = data["usage"]
        record(
            **usage,
            prompt_tokens=tokens.get("prompt_tokens") or 0,
            completion_tokens=tokens.get("completion_tokens") or 0,
            latency_ms=(time.perf_counter() - started) * 1000,
            ttft_ms=None,
        )
        return Reply(200, "application/json", _dumps(data))
    return Reply(
        200,
        "text/event-stream",
        _relay(response, route, request_id, candidate, usage, started, body),
        {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def answer(reply_coro, receive, send) -> None:
    """Work out a reply and send it; if the client goes away first (a non-streamed call waiting for its whole
    answer), the work is cancelled, which closes the upstream request and so stops the generation."""
    work = asyncio.ensure_future(reply_coro)
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not work.done():
            work.cancel()
        gone.cancel()
    try:
        reply = await work
    except asyncio.CancelledError:
        if gone.cancelled() or not gone.done():
            raise  # we were cancelled ourselves
        return  # the client left: nobody to answer
    await send_reply(reply, receive, send)


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def send_reply(reply: Reply, receive, send) -> None:
    """Send a Reply over ASGI; a stream stops (and its upstream request is closed) when the client goes away."""
    out = [(b"content-type", reply.content_type.encode())]
    out += [(k.lower().encode(), str(v).encode()) for k, v in reply.headers.items()]
    if isinstance(reply.body, bytes):
        out.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": out})
        await send({"type": "http.response.body", "body": reply.body})
        return
    await send({"type": "http.response.start", "status": reply.status, "headers": out})
    iterator = reply.body

    async def client_gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(client_gone())
    try:
        async for part in iterator:
            if watcher.done():  # stop reading the model's stream for nobody
                break
            await send({"type": "http.response.body", "body": part, "more_body": True})
        else:
            await send({"type": "http.response.body", "body": b""})
    finally:
        watcher.cancel()
        await iterator.aclose()


PATH = "/api/paas/v4/chat/completions"


GENERATION_FRESH_SECONDS = 0.1


async def endpoint(scope, receive, send) -> None:
    """``/api/paas/v4/chat/completions``, the one implementation: the API key first (nobody without one gets a
    byte of their body read; an address with too many failed keys this minute gets 429, as on every API path),
    then the body, bounded, then ``handle``."""
    if scope["method"] != "POST":
        return await send_reply(await handle(scope["method"], b"", None, user=None), receive, send)
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    try:
        address = (scope.get("client") or ("",))[0]
        key = await authenticate_throttled_async(headers.get("authorization"), address, (routecache.GENERATION_KEY,))
        reading = time.monotonic()
        raw = await read_asgi_body(scope, receive, conf.max_body_bytes())
    except ApiError as exc:
        return await send_reply(Reply.error(exc), receive, send)
    except ClientGone:
        return
    # The routes' generation read with the key is the call's while the body came at once; after a slow upload
    # it is read again (a route changed meanwhile is not used).
    fresh = time.monotonic() - reading < GENERATION_FRESH_SECONDS
    reply = handle(
        "POST",
        raw,
        headers.get("x-request-id"),
        user=key.user,
        rate_id=key.key_id,
        routes_generation=routecache.generation_read(key.also) if fresh else None,
    )
    await answer(reply, receive, send)


def asgi_app(inner):
    """ASGI fast path for the gateway: chat completions skip Django's middleware and URL routing (a few ms a call
    under load: several middlewares are sync-only, so each request would hop threads) and are answered by
    ``endpoint``; everything else goes to ``inner``."""

    async def app(scope, receive, send):
        if scope["type"] == "http" and scope["path"].rstrip("/") == PATH:
            return await endpoint(scope, receive, send)
        return await inner(scope, receive, send)

    return app


def django_view(asgi_endpoint):
    """An endpoint served by ASGI as the Django view of its URL (``reverse()``, Django's test client, a WSGI
    server): the request that reaches Django is handed to ``asgi_endpoint`` as it is, so the endpoint has one
    implementation. Under uvicorn the ASGI fast path answers before Django. The answer is buffered here (a WSGI
    server cannot stream from the event loop that ends with the view)."""

    @csrf_exempt  # the endpoint checks what it needs (an API key; the playground's session and CSRF token)
    async def view(request: HttpRequest) -> HttpResponse:
        meta = request.META
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": request.scheme,
            "path": request.path,
            "raw_path": request.path.encode(),
            "root_path": "",
            "query_string": meta.get("QUERY_STRING", "").encode("latin-1"),
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()],
            "client": (meta.get("REMOTE_ADDR", ""), 0),
            "server": (meta.get("SERVER_NAME", ""), int(meta.get("SERVER_PORT") or 0)),
        }
        done = False

        async def receive():
            nonlocal done
            if done:  # the client stays until the answer is complete
                await asyncio.Event().wait()
            chunk = request.read(2**16)  # the endpoint bounds the body itself, as under uvicorn
            done = not chunk
            return {"type": "http.request", "body": chunk, "more_body": not done}

        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        await asgi_endpoint(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        response = HttpResponse(b"".join(m.get("body", b"") for m in sent if m is not start), status=start["status"])
        for name, value in start.get("headers", []):
            response[name.decode("latin-1")] = value.decode("latin-1")
        return response

    return view


# The URL of ``endpoint`` (deployments/api.py).
chat_completions = django_view(endpoint)


async def _relay(
    response: httpx.Response,
    route: Route,
    request_id: str,
    candidate: Candidate,
    usage: dict,
    started: float,
    body: dict,
):
    """Upstream SSE events, rewritten to the platform's shape, then ``data: [DONE]``. Usage rides on the last
    chunk: the runtime's own when it sends it (asked for with ``stream_options``), else counted here."""
    ttft = None
    tokens: dict = {}
    sent: list[bytes] = []  # the rewritten chunks' payloads, read only if the runtime sends no usage
    status, error = 200, ""
    buffer = b""
    pieces = response.aiter_raw()
    try:
        while True:
            try:  # each read bounded by what is left of the time limit (a stalled server yields nothing); a timer,
                # not wait_for's task a read (a tenth of the relay's CPU)
                async with asyncio.timeout(_time_left(started)):
                    piece = await anext(pieces)
            except StopAsyncIteration:
                break
            buffer += piece
            _progress(candidate.instance_id)
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                out = _rewrite(event, route.code, request_id, tokens)
                if out is None:
                    continue
                if ttft is None:
                    ttft = (time.perf_counter() - started) * 1000
                sent.append(out)
                yield out
        if buffer.strip():
            out = _rewrite(buffer, route.code, request_id, tokens)
            if out is not None:
                sent.append(out)
                yield out
        if not tokens.get("completion_tokens"):
            tokens.update(await _count_usage(route.tokenizer_folder, body, _streamed_texts(sent)))
            yield (
                b"data: "
                + _dumps(
                    {
                        "id": request_id,
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": route.code,
                        "request_id": request_id,
                        "choices": [],
                        "usage": tokens,
                    }
                )
                + b"\n\n"
            )
        yield b"data: [DONE]\n\n"
    except TimeoutError:
        too_slow = _too_slow()
        status, error = too_slow.status, too_slow.message
        yield b"data: " + _dumps({"error": {"code": too_slow.code, "message": error}}) + b"\n\n"
        yield b"data: [DONE]\n\n"
    except (httpx.HTTPError, ValueError) as exc:
        status, error = 502, f"the model server's stream broke: {exc}"
        yield b"data: " + _dumps({"error": {"code": "model_server_error", "message": error}}) + b"\n\n"
    except BaseException as exc:  # the client went away (asyncio.CancelledError, GeneratorExit)
        status, error = 499, f"the client closed the connection ({type(exc).__name__})"
        raise
    finally:
        await response.aclose()
        await _release(candidate.instance_id)
        record(
            **usage,
            status_code=status,
            error=error,
            prompt_tokens=tokens.get("prompt_tokens") or 0,
            completion_tokens=tokens.get("completion_tokens") or 0,
            latency_ms=(time.perf_counter() - started) * 1000,
            ttft_ms=ttft,
        )


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _time_left(started: float) -> float:
    return max(0.0, conf.max_generation_seconds() - (time.perf_counter() - started))


def _too_slow() -> ApiError:
    limit = conf.max_generation_seconds()
    return ApiError(
        504,
        "generation_timeout",
        f"The answer was stopped at the time limit of {limit:g} s (SERVING_MAX_GENERATION_SECONDS). Ask for fewer "
        "tokens (max_tokens), or stream to receive what is generated as it comes.",
    )


def _streamed_texts(payloads: list[bytes]) -> list[str]:
    """The generated text of each relayed chunk (one per chunk that carried any)."""
    texts = []
    for out in payloads:
        try:
            chunk = json.loads(out[len(b"data: ") :])
            delta = (chunk.get("choices") or [{}])[0].get("delta") or {}
        except (ValueError, AttributeError, IndexError):
            continue
        text = (delta.get("content") or "") + (delta.get("reasoning_content") or "")
        if text or delta.get("tool_calls"):
            texts.append(text)
    return texts


async def _count_usage(folder: str | None, body: dict, texts: list[str]) -> dict:
    """Usage counted by the gateway for a runtime that reported none: the served model's own tokenizer on the
    prompt as its chat template renders it and on the generated text. Without a tokenizer, one token a chunk."""

    def count() -> tuple[int, int]:
        from datasets.tokenizer import counting_tokenizer_from_folder

        return _prompt_tokens(folder, body), counting_tokenizer_from_folder(folder).count(["".join(texts)])[0]

    prompt_tokens, completion_tokens = 0, len(texts)
    if folder and (Path(folder) / "tokenizer.json").exists():
        try:
            prompt_tokens, completion_tokens = await asyncio.to_thread(count)
        except Exception:  # an odd tokenizer: fall back to counting chunks
            logger.warning("counting the usage of a call with %s's tokenizer failed", folder, exc_info=True)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


_MODEL_FIELD = re.compile(rb'"model":\s*"(?:[^"\\]|\\.)*"')


def _rewrite(event: bytes, code: str, request_id: str, tokens: dict) -> bytes | None:
    payload = b"".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
    if not payload or payload == b"[DONE]":
        return None
    if b'"usage"' not in payload:
        # Most chunks: swap the model field in the bytes (no JSON round trip per token). Escaped quotes inside
        # generated text cannot match the pattern, so only the real field is replaced.
        replacement = b'"model":' + _dumps(code) + b',"request_id":' + _dumps(request_id)
        out, count = _MODEL_FIELD.subn(lambda _m: replacement, payload, count=1)
        if count:
            return b"data: " + out + b"\n\n"
    chunk = json.loads(payload)
    if isinstance(chunk, dict):
        chunk["model"], chunk["request_id"] = code, request_id
        if chunk.get("usage"):
            tokens.update(chunk["usage"])
    return b"data: " + _dumps(chunk) + b"\n\n"
