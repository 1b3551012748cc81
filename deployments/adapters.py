"""LoRA fine-tunes loaded into vLLM public-pool instances at run time (multi-LoRA serving).

A pool instance serves its base model with ``--enable-lora``; a fine-tune's adapter is loaded into it on its
first call (``POST /v1/load_lora_adapter``, no merged copy), kept while used and unloaded least recently used
when the instance holds SERVING_POOL_ADAPTERS of them. Which adapters each instance holds, and when each was last
called, is a Redis sorted set per instance (shared by every web process): the gateway sends a call to an
instance that holds its adapter when one does. Deleting a fine-tune unloads it everywhere.

vLLM answers 400 to loading a name it already holds (another web process loaded it first) and 404 to unloading
one it does not: both mean the instance is already as wanted.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import redis

from common.api import ApiError

from . import conf
from .inflight import async_client

logger = logging.getLogger(__name__)


def key(instance_id: int) -> str:
    return f"serving:adapters:{instance_id}"


async def resident(instance_ids: list[int], code: str) -> list[bool]:
    """For each instance, whether it holds ``code``'s adapter."""
    async with async_client().pipeline(transaction=False) as pipe:
        for instance_id in instance_ids:
            pipe.zscore(key(instance_id), code)
        scores = await pipe.execute()
    return [score is not None for score in scores]


_locks: dict[int, asyncio.Lock] = {}


async def ensure_loaded(
    client: httpx.AsyncClient, url: str, headers: dict, instance_id: int, code: str, adapter_path: str
) -> None:
    """Make the instance at ``url`` hold ``code``'s adapter (from ``adapter_path``), evicting the least recently
    used when it is full. Raises ApiError when the instance refuses it."""
    store = async_client()
    now = time.time()
    if await store.zscore(key(instance_id), code) is not None:
        await store.zadd(key(instance_id), {code: now})
        return
    lock = _locks.setdefault(instance_id, asyncio.Lock())
    if len(_locks) > 10_000:
        _locks.clear()
    async with lock:  # one load or eviction at a time per instance in this process
        if await store.zscore(key(instance_id), code) is not None:
            await store.zadd(key(instance_id), {code: now})
            return
        held = await store.zrange(key(instance_id), 0, -1)
        for old in held[: max(0, len(held) - conf.pool_adapters() + 1)]:  # oldest first
            old = old.decode() if isinstance(old, bytes) else old
            await _post(client, f"{url}/v1/unload_lora_adapter", headers, {"lora_name": old}, ok=(200, 404))
            await store.zrem(key(instance_id), old)
            logger.info("instance %s: unloaded %s (least recently used)", instance_id, old)
        started = time.perf_counter()
        response = await _post(
            client,
            f"{url}/v1/load_lora_adapter",
            headers,
            {"lora_name": code, "lora_path": adapter_path},
            ok=(200, 400),
        )
        if response.status_code == 400 and "already" not in response.text.lower():
            raise ApiError(500, "model_load_failed", f"The server could not load {code}: {response.text[:500]}")
        async with store.pipeline(transaction=False) as pipe:
            pipe.zadd(key(instance_id), {code: time.time()})
            pipe.expire(key(instance_id), 30 * 86400)
            await pipe.execute()
        logger.info("instance %s: loaded %s in %.2f s", instance_id, code, time.perf_counter() - started)


async def _post(client: httpx.AsyncClient, url: str, headers: dict, body: dict, ok: tuple) -> httpx.Response:
    try:
        response = await client.post(url, json=body, headers=headers, timeout=120.0)
    except httpx.HTTPError as exc:
        raise ApiError(502, "model_server_error", f"The model server did not answer: {type(exc).__name__}") from exc
    if response.status_code not in ok:
        raise ApiError(500, "model_load_failed", f"The model server refused the adapter: {response.text[:500]}")
    return response


def forget_instance(client: redis.Redis, instance_id: int) -> None:
    client.delete(key(instance_id))


def unload_everywhere(code: str) -> int:
    """Unload ``code`` from every ready pool instance that holds it (a deleted fine-tune). Returns how many."""
    from common.redis import redis_client

    from .models import DeploymentKind, Instance, InstanceState
    from .runtimes import get_runtime

    done = 0
    instances = Instance.objects.filter(
        deployment__kind=DeploymentKind.POOL,
        state__in=[InstanceState.READY, InstanceState.UNHEALTHY, InstanceState.DRAINING],
    )
    with redis_client(2) as store:
        for instance in instances:
            if store.zscore(key(instance.pk), code) is None:
                continue
            headers = get_runtime(instance.runtime).headers(instance.api_key)
            try:
                response = httpx.post(
                    f"{instance.base_url}/v1/unload_lora_adapter",
                    json={"lora_name": code},
                    headers=headers,
                    timeout=30.0,
                )
                if response.status_code not in (200, 404):
                    logger.warning("instance %s kept %s: %s", instance.pk, code, response.text[:300])
                    continue
            except httpx.HTTPError as exc:
                logger.warning("could not unload %s from instance %s: %s", code, instance.pk, exc)
                continue
            store.zrem(key(instance.pk), code)
            done += 1
    return done
