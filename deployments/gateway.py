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
import json
import logging
import queue
import random
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from console.api import ApiError, authenticate_api_key
from modelcards.models import BaseModel, FineTunedModel
from modelcards.weights import WeightsMissing

from . import inflight
from .models import ApiCall, Deployment, DeploymentKind, DeploymentStatus, Instance, InstanceState
from .runtimes import get_runtime
from .targets import Target, is_prepared, target_of

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent


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
    return Route(code, user_id, deployment.pk, candidates)


def _pool_route(model: BaseModel | FineTunedModel, code: str, user_id: int) -> Route:
    try:
        target = target_of(model)
    except WeightsMissing as exc:
        raise ApiError(
            400, "weights_missing", f"The weights of {code} are not on this server: {exc}", "model"
        ) from None
    pool = Deployment.objects.filter(kind=DeploymentKind.POOL).first()
    candidates = _candidates(pool.pk) if pool is not None else []
    if not candidates:
        raise ApiError(
            503,
            "no_ready_instance",
            "The public pool has no ready instance right now; try again shortly, or deploy the model.",
            "model",
        )
    return Route(code, user_id, pool.pk, candidates, pool_target=target)


def _deployment_rows(code: str) -> list[tuple]:
    """A deployment by its code with its ready instances, in one query (the hot path of every call: the ORM's
    query building costs more than the query itself)."""
    deployments, instances = Deployment._meta.db_table, Instance._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT d.id, d.owner_id, d.status, d.status_reason, d.ready_instances, d.desired_instances, "  # noqa: S608
            f"i.id, i.host, i.port, i.runtime, i.upstream_model, i.api_key FROM {deployments} d "
            f"LEFT JOIN {instances} i ON i.deployment_id = d.id AND i.state = %s "
            f"WHERE d.code = %s AND d.kind = %s",
            [InstanceState.READY, code, DeploymentKind.PRIVATE],
        )
        return cursor.fetchall()


def resolve(user, code) -> Route:
    """The instances that may serve ``code`` for ``user``, or an ApiError (404, 400 deploy first, 503)."""
    if not isinstance(code, str) or not code.strip():
        raise ApiError(400, "1214", "model is required.", "model")
    rows = _deployment_rows(code)
    if rows:
        deployment_id, owner_id, status, reason, ready, desired = rows[0][:6]
        if owner_id != user.pk:
            raise _not_found(code)
        if status == DeploymentStatus.CANCELLED:
            raise ApiError(404, "model_not_found", f"The deployment {code} was cancelled.", "model")
        if status == DeploymentStatus.FAILED:
            raise ApiError(400, "deployment_failed", f"The deployment {code} failed: {reason}", "model")
        candidates = [Candidate(row[6], f"http://{row[7]}:{row[8]}", *row[9:12]) for row in rows if row[6]]
        if not candidates:
            raise ApiError(
                503,
                "no_ready_instance",
                f"No instance of {code} is ready yet ({ready}/{desired} ready, "
                f"{DeploymentStatus(status).label.lower()}). Try again shortly.",
                "model",
            )
        return Route(code, user.pk, deployment_id, candidates)
    fine_tune = FineTunedModel.objects.live().filter(code=code).select_related("base_model").first()
    if fine_tune is not None:
        if fine_tune.owner_id != user.pk:
            raise _not_found(code)
        if fine_tune.is_lora and fine_tune.base_model.public_pool:
            return _pool_route(fine_tune, code, user.pk)
        own = (
            Deployment.objects.owned_by(user)
            .filter(fine_tuned_model=fine_tune, ready_instances__gt=0)
            .exclude(status__in=[DeploymentStatus.CANCELLED, DeploymentStatus.FAILED])
            .first()
        )
        if own is not None:
            return _deployment_route(own, code, user.pk)
        why = (
            f"{code} is a full-parameter fine-tune: it is not served from the public pool."
            if not fine_tune.is_lora
            else f"LoRA fine-tunes of {fine_tune.base_model.code} are not served from the public pool."
        )
        raise _deploy_first(code, why)
    base = BaseModel.objects.usable_by(user).filter(code=code).first()
    if base is not None:
        verdict = _servable(base)
        if not verdict:
            raise ApiError(400, "model_not_servable", f"{code} cannot be served here: {verdict.reason}", "model")
        return _pool_route(base, code, user.pk)
    raise _not_found(code)


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


def _authorize_and_resolve(header: str | None, code, user=None) -> tuple:
    """The caller and the route of ``code``. The caller is the API key's user; or ``user`` when a console page
    authenticated the session; or what ``user()`` returns (an authentication that needs the database, done here in
    the same hop off the event loop), which may raise ApiError."""
    close_old_connections()
    if user is None:
        user = authenticate_api_key(header).user
    elif callable(user):
        user = user()
    return user, resolve(user, code)


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
            close_old_connections()
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
    lock = _prepare_locks.setdefault(target.code, asyncio.Lock())
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
            tail = "\n".join(out.decode("utf-8", "replace").strip().splitlines()[-5:])
            raise ApiError(500, "model_load_failed", f"Preparing {target.code} for serving failed: {tail}")


# ---------------------------------------------------------------- forwarding

_clients: dict[int, httpx.AsyncClient] = {}


def http_client() -> httpx.AsyncClient:
    loop_id = id(asyncio.get_running_loop())
    client = _clients.get(loop_id)
    if client is None:
        client = _clients[loop_id] = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=2.0, read=600.0, write=30.0, pool=30.0),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
    return client


async def _order(candidates: list[Candidate]) -> list[Candidate]:
    if len(candidates) < 2:
        return candidates
    try:
        busy = await inflight.counts([c.instance_id for c in candidates])
    except Exception:  # Redis away: route at random rather than fail the call
        busy = [0] * len(candidates)
    keyed = [(b, random.random(), c) for b, c in zip(busy, candidates, strict=True)]
    return [c for _b, _r, c in sorted(keyed, key=lambda t: (t[0], t[1]))]


async def _open(route: Route, body: dict, stream: bool) -> tuple[Candidate, httpx.Response]:
    """Send to the least busy instance; on a connection failure (nothing sent back yet) try the next."""
    client = http_client()
    last = ""
    for candidate in await _order(route.candidates):
        runtime = get_runtime(candidate.runtime)
        upstream = candidate.upstream_model or (str(route.pool_target.folder) if route.pool_target else "")
        payload = runtime.request_body({**body, "stream": stream}, upstream)
        request = client.build_request(
            "POST", f"{candidate.url}/v1/chat/completions", json=payload, headers=runtime.headers(candidate.api_key)
        )
        await _acquire(candidate.instance_id)
        try:
            response = await client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
            await _release(candidate.instance_id)
            last = f"{type(exc).__name__}: {exc}"
            logger.warning("instance %s refused the connection (%s); trying the next", candidate.instance_id, last)
            continue
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


async def _acquire(instance_id: int) -> None:
    _later(_count(inflight.acquire, instance_id))


async def _release(instance_id: int) -> None:
    _later(_count(inflight.release, instance_id))


def _upstream_error(status: int, raw: bytes) -> ApiError:
    try:
        data = json.loads(raw)
        detail = data.get("detail") or data.get("error") or data.get("message") or data
        if isinstance(detail, dict):
            detail = detail.get("message") or json.dumps(detail)
    except (ValueError, AttributeError):
        detail = raw.decode("utf-8", "replace")[:500]
    if 400 <= status < 500:
        return ApiError(400, "1214", f"The model server refused the request: {detail}")
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
        headers = {"x-should-retry": response["x-should-retry"]} if response.has_header("x-should-retry") else {}
        return cls(exc.status, "application/json", response.content, headers)


async def handle(
    method: str, authorization: str | None, raw: bytes, request_id_header: str | None, *, user=None
) -> Reply:
    """One chat completions call, whatever carries it (the Django view, the ASGI fast path, or a console page
    that passes its session's ``user`` instead of an API key)."""
    started = time.perf_counter()
    if method != "POST":
        return Reply.error(ApiError(405, "1214", f"Method {method} is not allowed here."))
    try:
        body = json.loads(raw or b"{}")
        if not isinstance(body, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as exc:
        return Reply.error(ApiError(400, "1210", f"The request body is not valid JSON: {exc}"))
    request_id = str(body.get("request_id") or request_id_header or uuid.uuid4().hex)
    stream = bool(body.get("stream"))
    code = body.get("model")
    try:
        caller, route = await sync_to_async(_authorize_and_resolve, thread_sensitive=False)(authorization, code, user)
    except ApiError as exc:
        return Reply.error(exc)
    usage = {
        "user_id": caller.pk,
        "model": str(code)[:160],
        "deployment_id": route.deployment_id,
        "request_id": request_id[:128],
        "stream": stream,
    }
    try:
        if route.pool_target is not None:
            await ensure_prepared(route.pool_target)
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
            raw = await response.aread()
        finally:
            await response.aclose()
            await _release(candidate.instance_id)
        data = json.loads(raw)
        data["model"], data["request_id"] = route.code, request_id
        tokens = data.get("usage") or {}
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
        _relay(response, route, request_id, candidate, usage, started),
        {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponse:
    """The Django view (the URL, and what the test client calls); production traffic takes ``asgi_app``."""
    reply = await handle(
        request.method, request.headers.get("Authorization"), request.body, request.headers.get("X-Request-Id")
    )
    if isinstance(reply.body, bytes):
        response = HttpResponse(reply.body, status=reply.status, content_type=reply.content_type)
    else:
        response = StreamingHttpResponse(reply.body, status=reply.status, content_type=reply.content_type)
    for name, value in reply.headers.items():
        response[name] = value
    return response


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


def asgi_app(inner):
    """ASGI fast path for the gateway: chat completions skip Django's middleware and URL routing (a few ms a call
    under load: several middlewares are sync-only, so each request would hop threads); everything else goes to
    ``inner``. Authentication, the error shape and the answer are the view's own (``handle``)."""

    async def app(scope, receive, send):
        if scope["type"] != "http" or scope["path"].rstrip("/") != PATH:
            return await inner(scope, receive, send)
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        reply = await handle(
            scope["method"], headers.get("authorization"), b"".join(chunks), headers.get("x-request-id")
        )
        await send_reply(reply, receive, send)

    return app


async def _relay(
    response: httpx.Response, route: Route, request_id: str, candidate: Candidate, usage: dict, started: float
):
    """Upstream SSE events, rewritten to the platform's shape, then ``data: [DONE]``."""
    ttft = None
    tokens: dict = {}
    status, error = 200, ""
    buffer = b""
    try:
        async for piece in response.aiter_raw():
            buffer += piece
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                out = _rewrite(event, route.code, request_id, tokens)
                if out is None:
                    continue
                if ttft is None:
                    ttft = (time.perf_counter() - started) * 1000
                yield out
        if buffer.strip():
            out = _rewrite(buffer, route.code, request_id, tokens)
            if out is not None:
                yield out
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
