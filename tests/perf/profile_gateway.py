"""Where the gateway's time goes in one chat completions call: per-stage timings, measured from outside.

Run on demand (not part of the test run):

    .venv/bin/python tests/perf/profile_gateway.py [--calls 200] [--streams 1] [--tokens 8]
        [--runtime stand-in|transformers|vllm] [--route pool|private] [--busy]

It starts its own embedded Redis and an inference instance of the default model (``transformers serve`` or vLLM,
started with the runtime's own command and key, or the suite's stand-in server that streams ``--tokens`` chunks
20 ms apart), registers it as the ready instance of the model's public pool (or of a private deployment,
``--route private``), and serves the console under uvicorn from this script (``--serve``): the same application,
with the gateway's stages wrapped here, by monkeypatching, so the production code carries no instrumentation.
Then it makes ``--calls`` rounds of ``--streams`` streamed calls at once, alternately straight to the instance
(with its key) and through the gateway (with an API key), and prints:

- the client's time to first token, direct and through the gateway (medians): the gateway's added latency; and the
  chunks of text a second each way (the median round's), their ratio the gateway's cost in throughput;
- the gateway's stages, each the median time since the request reached the application: the API key checked,
  the body read, the hop to a thread started, the model resolved to its route, the caller's generation checked
  against it ("resolved", the end of the hop), the call admitted (the per-user limits in Redis), the request sent
  to the instance, its response headers back, the first byte sent to the client.
  "sent upstream" is the gateway's own cost before the instance has the request. A known caller's route is
  cached in the process (deployments/routecache.py): the hop and the route are marked only on the calls that
  resolved it, shown with how many they were;
- the web process's CPU time a gateway call (both legs run in the same rounds; only the gateway's use it), what
  the gateway takes from the model's CPUs when they share a machine;
- the machine (CPU model and flags) and its load before the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("CONSOLE_VAR_DIR", str(ROOT / "var" / "profile-gateway"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ.pop("DATABASE_URL", None)
os.environ.pop("REDIS_URL", None)
os.environ["SERVING_POOL_INSTANCES"] = "0"

import logging  # noqa: E402

from bench_serving import MESSAGES, SAMPLING  # noqa: E402  (the same call both scripts make, sampling alike both ways)
from machine import report as machine_report  # noqa: E402
from machine import require_quiet  # noqa: E402

STAGES_ENV = "PROFILE_GATEWAY_STAGES"
# The marks, in the order a call passes them (ms since the request reached the application).
MARKS = [
    "authenticated",
    "body_read",
    "hop_started",
    "route_found",
    "resolved",
    "admitted",
    "sent_upstream",
    "upstream_headers",
    "first_byte",
]


# ---------------------------------------------------------------- the server side (``--serve``)


def serve(argv: list[str]) -> None:
    """The console under uvicorn, as ``uvicorn console.asgi:application ARGS`` serves it, with the gateway's stages
    timed: each request's marks appended as a JSON line to the file named by PROFILE_GATEWAY_STAGES."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--lifespan", default="off")
    parser.add_argument("--no-access-log", action="store_true")
    args = parser.parse_args(argv)

    import django

    django.setup()
    import httpx
    import uvicorn

    from console.asgi import application
    from deployments import gateway, limits

    out = open(os.environ[STAGES_ENV], "a", buffering=1)  # noqa: SIM115 - open while the server runs
    current: contextvars.ContextVar[dict | None] = contextvars.ContextVar("profile_marks", default=None)

    def mark(name: str) -> None:
        marks = current.get()
        if marks is not None and name not in marks:
            marks[name] = (time.perf_counter() - marks["_arrived"]) * 1000

    def after_sync(function, name: str):
        def wrapped(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            finally:
                mark(name)

        return wrapped

    def after_async(function, name: str):
        async def wrapped(*args, **kwargs):
            try:
                return await function(*args, **kwargs)
            finally:
                mark(name)

        return wrapped

    endpoint = gateway.endpoint

    async def timed_endpoint(scope, receive, send):
        marks = {"_arrived": time.perf_counter()}
        current.set(marks)  # copied into the threads the gateway hops to (the same dict)

        async def timed_send(message):
            if message["type"] == "http.response.body" and message.get("body"):
                mark("first_byte")
            await send(message)

        try:
            await endpoint(scope, receive, timed_send)
        finally:
            marks.pop("_arrived")
            out.write(json.dumps(marks) + "\n")

    # Whichever authentication the gateway's endpoint calls (the names differ between versions of the gateway).
    for name in ("authenticate_throttled_async", "_authenticate"):
        function = getattr(gateway, name, None)
        if function is not None:
            wrap = after_async if asyncio.iscoroutinefunction(function) else after_sync
            setattr(gateway, name, wrap(function, "authenticated"))
    authorize_and_resolve = gateway._authorize_and_resolve

    def timed_authorize_and_resolve(*args, **kwargs):
        mark("hop_started")  # in the thread the gateway hopped to
        try:
            return authorize_and_resolve(*args, **kwargs)
        finally:
            mark("resolved")

    gateway._authorize_and_resolve = timed_authorize_and_resolve
    gateway.resolve = after_sync(gateway.resolve, "route_found")
    gateway.read_asgi_body = after_async(gateway.read_asgi_body, "body_read")
    limits.enter = after_async(limits.enter, "admitted")
    gateway.endpoint = timed_endpoint  # asgi_app looks it up at each call
    send_request = httpx.AsyncClient.send

    async def timed_upstream(self, request, **kwargs):
        mark("sent_upstream")
        try:
            return await send_request(self, request, **kwargs)
        finally:
            mark("upstream_headers")

    httpx.AsyncClient.send = timed_upstream  # type: ignore[method-assign]  # the profiler's wrapper
    profile = os.environ.get("PROFILE_GATEWAY_CPROFILE")  # a file: the server's cProfile statistics, at its exit
    if profile:
        import cProfile

        def leave(*_args):  # uvicorn raises the SIGTERM it caught again once it has stopped: end here, and dump
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, leave)
        profiler = cProfile.Profile()
        profiler.enable()
    try:
        log = not args.no_access_log
        uvicorn.run(application, host=args.host, port=args.port, lifespan=args.lifespan, access_log=log)
    finally:
        if profile:
            profiler.disable()
            profiler.dump_stats(profile)


# ---------------------------------------------------------------- the driver


async def one_stream(client, url: str, headers: dict, model: str, tokens: int) -> tuple[float, int]:
    """Seconds to the first token of one streamed call, and the chunks of text it received."""
    started = time.perf_counter()
    body = {"model": model, "messages": MESSAGES, "max_tokens": tokens, "stream": True, "seed": 1, **SAMPLING}
    ttft, chunks = None, 0
    async with client.stream("POST", f"{url}/chat/completions", headers=headers, json=body) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = json.loads(line[6:])
                if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                    chunks += 1
                    if ttft is None:
                        ttft = time.perf_counter() - started
    return (ttft if ttft is not None else time.perf_counter() - started), chunks


async def one_round(client, url: str, headers: dict, model: str, tokens: int, streams: int):
    """``streams`` calls at once: their times to first token (ms) and the chunks a second of the round."""
    started = time.perf_counter()
    results = await asyncio.gather(*[one_stream(client, url, headers, model, tokens) for _ in range(streams)])
    return [r[0] * 1000 for r in results], sum(r[1] for r in results) / (time.perf_counter() - started)


def start_instance(runtime_name: str, base, port: int, key: str, log: Path, tokens: int):
    """The instance's process and the ``model`` a direct call names: the runtime's own command (a pool's), or
    the stand-in server."""
    import subprocess

    from deployments.runtimes import get_runtime
    from deployments.targets import target_of
    from tests import experience_upstream

    if runtime_name == "stand-in":
        return experience_upstream.start(port, FAKE_TOKENS=str(tokens), FAKE_DELAY="0.02"), "stand-in"
    runtime = get_runtime(runtime_name)
    target = target_of(base)
    command = runtime.command(target=target, host="127.0.0.1", port=port, served_name=base.code, pool=True)
    env = {**os.environ, **runtime.environment(omp_threads=os.cpu_count() or 1, api_key=key)}
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
    )
    model = runtime.upstream_model(target=target, served_name=base.code, pool=True) or str(target.folder)
    return proc, model


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (its own threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_health(url: str, proc, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the instance exited at start (code {proc.returncode})")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the instance did not answer /health within {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=200, help="rounds each way (after 10 to warm up)")
    parser.add_argument("--streams", type=int, default=1, help="calls at once in a round")
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--runtime", choices=["stand-in", "transformers", "vllm"], default="transformers")
    parser.add_argument("--route", choices=["pool", "private"], default="pool")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--busy", action="store_true", help="measure even though the machine is busy")
    args, rest = parser.parse_known_args()
    if args.serve:
        serve(rest)
        return 0
    require_quiet(args.busy)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per call
    if args.runtime == "vllm":
        python = os.environ.get("VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
        if not Path(python).exists():
            print("vLLM is not installed: ./run test (or ./run up) makes .venv-vllm", file=sys.stderr)
            return 2
        os.environ["VLLM_PYTHON"] = python

    import django

    django.setup()
    from datetime import timedelta

    import httpx
    from django.conf import settings
    from django.core.management import call_command
    from django.utils import timezone

    from accounts.models import ApiKey, User
    from deployments import services as serving
    from deployments.models import Deployment, Instance, Node
    from modelcards.models import BaseModel
    from modelcards.weights import model_dir
    from tests import services
    from tests.serving_support import free_port, start_web

    machine = machine_report()
    print(machine, flush=True)
    var = Path(settings.VAR_DIR)
    var.mkdir(parents=True, exist_ok=True)
    db = settings.DATABASES["default"]["NAME"]
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    call_command("migrate", verbosity=0)
    base = BaseModel.objects.get(code=args.model)
    BaseModel.objects.filter(pk=base.pk).update(public_pool=True)
    model_dir(base)  # converted once into var/models/
    user = User.objects.create_user("profile", password="x")
    headers = {"Authorization": f"Bearer {ApiKey.create_for(user=user, name='profile')[1]}"}
    stages = var / "gateway-stages.jsonl"
    stages.unlink(missing_ok=True)

    redis = services.start_embedded_redis()
    port, key = free_port(), "profile-instance-key"
    instance_proc, direct_model = start_instance(args.runtime, base, port, key, var / "instance.log", args.tokens)
    web = None
    try:
        direct = f"http://127.0.0.1:{port}/v1"
        wait_health(f"http://127.0.0.1:{port}", instance_proc, 900 if args.runtime == "vllm" else 300)
        far = timezone.now() + timedelta(days=1)
        node = Node.objects.create(name="profile", heartbeat_at=far, slots=0)
        if args.route == "pool":
            deployment = serving.pool_deployment(base)
            Deployment.objects.filter(pk=deployment.pk).update(status="running", desired_instances=1, ready_instances=1)
            code = base.code
        else:
            deployment = Deployment.objects.create(
                owner=user, code="profile-private", base_model=base, status="running", ready_instances=1
            )
            code = deployment.code
        Instance.objects.create(
            deployment=deployment,
            node=node,
            runtime="transformers" if args.runtime == "stand-in" else args.runtime,
            state="ready",
            port=port,
            upstream_model=direct_model if args.route == "private" or args.runtime != "transformers" else "",
            api_key=key,
        )
        env = {
            STAGES_ENV: str(stages),
            "SERVING_REQUESTS_PER_MINUTE": "0",  # the run's calls are one key's: no limit hit
            "SERVING_CONCURRENT_PER_USER": "0",
        }
        web, url = start_web(db, env, server=[sys.executable, str(Path(__file__).resolve()), "--serve"])
        api = f"{url}/api/paas/v4"
        own = {"Authorization": f"Bearer {key}"}

        d: list[float] = []
        g: list[float] = []
        d_rate: list[float] = []
        g_rate: list[float] = []

        async def run() -> None:
            async with httpx.AsyncClient(timeout=600) as to_instance, httpx.AsyncClient(timeout=600) as to_gateway:
                legs = [
                    (to_instance, direct, own, direct_model, d, d_rate),
                    (to_gateway, api, headers, code, g, g_rate),
                ]
                for i in range(10 + args.calls):
                    for client, target, hdrs, model, out, rates in legs if i % 2 == 0 else legs[::-1]:
                        ttfts, rate = await one_round(client, target, hdrs, model, args.tokens, args.streams)
                        if i >= 10:
                            out.extend(ttfts)
                            rates.append(rate)

        cpu_before = process_cpu_seconds(web.pid)
        asyncio.run(run())
        web_cpu_ms = (process_cpu_seconds(web.pid) - cpu_before) * 1000
    finally:
        for stop in (
            lambda: services.stop(web),
            lambda: services.stop(instance_proc, timeout=30),
            lambda: services.stop(redis),
        ):
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 - stop the others anyway
                print(f"stopping: {exc}", file=sys.stderr)

    lines = [json.loads(line) for line in stages.read_text().splitlines() if line.strip()]
    calls = [marks for marks in lines if "first_byte" in marks][10 * args.streams :]  # the warm-up left out
    med = statistics.median
    print(
        f"\n{args.calls} rounds of {args.streams} streamed call(s) each way, {args.tokens} tokens a call, "
        f"{args.runtime} instance, {args.route} route, model {code}"
    )
    print(f"{machine}")
    print(
        f"client's time to first token (median): direct {med(d):.2f} ms, through the gateway {med(g):.2f} ms: "
        f"+{med(g) - med(d):.2f} ms added; throughput {med(g_rate):.1f} vs {med(d_rate):.1f} chunks/s "
        f"({med(g_rate) / med(d_rate):.3f}x direct)"
    )
    gateway_calls = (10 + args.calls) * args.streams
    print(
        f"web process CPU: {web_cpu_ms / gateway_calls:.2f} ms a call through the gateway "
        f"({web_cpu_ms:.0f} ms for {gateway_calls} calls of {args.tokens} tokens: what it takes from the model's CPUs)"
    )
    print("gateway stages (median ms since the request reached the application; the step from the mark before):")
    previous = 0.0
    for name in MARKS:
        values = [marks[name] for marks in calls if name in marks]
        if not values:
            continue
        at = med(values)
        seen = "" if len(values) == len(calls) else f"   [{len(values)} of {len(calls)} calls]"
        if seen:  # a stage most calls skip (the route's hop and queries: cached after a caller's first call)
            print(f"  {name:<18} {at:8.2f}{seen}")
            continue
        print(f"  {name:<18} {at:8.2f}   (+{at - previous:.2f})")
        previous = at
    summary = {
        "runtime": args.runtime,
        "route": args.route,
        "calls": args.calls,
        "streams": args.streams,
        "ttft_direct_ms": med(d),
        "ttft_gateway_ms": med(g),
        "rate_direct": med(d_rate),
        "rate_gateway": med(g_rate),
        "web_cpu_ms_a_call": web_cpu_ms / gateway_calls,
        **{name: med([m[name] for m in calls if name in m]) for name in MARKS if any(name in m for m in calls)},
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
