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
import random
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from asgiref.sync import sync_to_async
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from console.api import ApiError, authenticate_api_key, error_response
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


def resolve(user, code) -> Route:
    """The instances that may serve ``code`` for ``user``, or an ApiError (404, 400 deploy first, 503)."""
    if not isinstance(code, str) or not code.strip():
        raise ApiError(400, "1214", "model is required.", "model")
    deployment = Deployment.objects.filter(code=code, kind=DeploymentKind.PRIVATE).first()
    if deployment is not None:
        if deployment.owner_id != user.pk:
            raise _not_found(code)
        if deployment.status == DeploymentStatus.CANCELLED:
            raise ApiError(404, "model_not_found", f"The deployment {code} was cancelled.", "model")
        if deployment.status == DeploymentStatus.FAILED:
            raise ApiError(
                400, "deployment_failed", f"The deployment {code} failed: {deployment.status_reason}", "model"
            )
        return _deployment_route(deployment, code, user.pk)
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
        verdict = base.capabilities().serve
        if not verdict:
            raise ApiError(400, "model_not_servable", f"{code} cannot be served here: {verdict.reason}", "model")
        return _pool_route(base, code, user.pk)
    raise _not_found(code)


def _authorize_and_resolve(header: str | None, code) -> tuple:
    close_old_connections()
    key = authenticate_api_key(header)
    return key, resolve(key.user, code)


# ---------------------------------------------------------------- recording usage, off the request's path

_recorder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage")


def _record(fields: dict) -> None:
    try:
        close_old_connections()
        ApiCall.objects.create(**fields)
    except Exception:
        logger.exception("recording a call failed")


def record(**fields) -> None:
    _recorder.submit(_record, fields)


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


async def _acquire(instance_id: int) -> None:
    try:
        await inflight.acquire(instance_id)
    except Exception:
        logger.warning("could not count a request in flight", exc_info=True)


async def _release(instance_id: int) -> None:
    try:
        await inflight.release(instance_id)
    except Exception:
        logger.warning("could not count a request done", exc_info=True)


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


def _dumps(data: dict) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponse:
    started = time.perf_counter()
    if request.method != "POST":
        return error_response(405, "1214", f"Method {request.method} is not allowed here.")
    try:
        body = json.loads(request.body or b"{}")
        if not isinstance(body, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as exc:
        return error_response(400, "1210", f"The request body is not valid JSON: {exc}")
    request_id = str(body.get("request_id") or request.headers.get("X-Request-Id") or uuid.uuid4().hex)
    stream = bool(body.get("stream"))
    code = body.get("model")
    try:
        key, route = await sync_to_async(_authorize_and_resolve, thread_sensitive=False)(
            request.headers.get("Authorization"), code
        )
    except ApiError as exc:
        return exc.response()
    usage = {
        "user_id": key.user_id,
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
        return exc.response()
    usage["instance_id"] = candidate.instance_id
    if response.status_code >= 400:
        raw = await response.aread()
        await response.aclose()
        await _release(candidate.instance_id)
        error = _upstream_error(response.status_code, raw)
        record(
            **usage, status_code=error.status, error=error.message, latency_ms=(time.perf_counter() - started) * 1000
        )
        return error.response()
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
        return HttpResponse(_dumps(data), content_type="application/json")
    out = StreamingHttpResponse(
        _relay(response, route, request_id, candidate, usage, started), content_type="text/event-stream"
    )
    out["Cache-Control"] = "no-cache"
    out["X-Accel-Buffering"] = "no"
    return out


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


def _rewrite(event: bytes, code: str, request_id: str, tokens: dict) -> bytes | None:
    payload = b"".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
    if not payload or payload == b"[DONE]":
        return None
    chunk = json.loads(payload)
    if isinstance(chunk, dict):
        chunk["model"], chunk["request_id"] = code, request_id
        if chunk.get("usage"):
            tokens.update(chunk["usage"])
    return b"data: " + _dumps(chunk) + b"\n\n"
