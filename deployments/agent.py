"""The node agent: one long-lived process per serving machine (``manage.py serve_node``).

It registers its node (slots, memory, threads) and keeps a heartbeat; starts the instance processes the
database assigns to it (a free port on loopback, its own process group, output to a log file, the node's
OMP_NUM_THREADS, a per-instance API key where the runtime takes one); waits for ``/health`` and marks them ready;
checks them; drains surplus ones (in-flight requests finish, at most SERVING_DRAIN_TIMEOUT seconds) and stops
them (SIGTERM, then SIGKILL after a grace). Each started process has a pid file: an agent that starts again adopts
the processes whose instance is still wanted and whose port is healthy, and kills the others, so none is left
orphaned. SIGTERM/SIGINT stop the agent and its instances (``./run up``'s Ctrl-C); the instances are marked
failed, and the reconciler starts replacements wherever there is room.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from common.processes import signal_group
from console import cpus
from console.errors import last_exception

from . import conf, inflight, states
from .models import HOLDS_SLOT, Instance, InstanceState, Node

logger = logging.getLogger("deployments.agent")

ROOT = Path(__file__).resolve().parent.parent
HEALTH_EVERY = 2.0  # seconds between health checks of a ready instance
UNHEALTHY_AFTER = 3  # failed checks in a row
UNKNOWN_EXIT = -999  # an adopted process is not our child: its exit code cannot be read
LOG_LINES = 15  # the lines of an instance's log that the agent's log keeps when it fails to load


def machine_memory_mb() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**2)
    except (ValueError, OSError):  # pragma: no cover
        return 8192


def default_sizing() -> tuple[int, int]:
    """Slots and threads for this machine: one slot per 2 GiB up to 2 per core; each instance's threads are the
    serving CPUs (console/cpus.py: training keeps the others)."""
    from console import cpus

    cores = os.cpu_count() or 1
    slots = max(2, min(cores * 2, machine_memory_mb() // 2048))
    return slots, max(1, len(cpus.serving()))


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def instance_log(instance_id: int) -> Path:
    """Where the node agent writes an instance's server output."""
    return conf.serving_dir() / "logs" / f"instance-{instance_id}.log"


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def process_instance_id(pid: int) -> int | None:
    """The instance id a process was started for (from its environment), to never kill a recycled pid."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for item in f.read().split(b"\0"):
                if item.startswith(b"SERVING_INSTANCE_ID="):
                    return int(item.split(b"=", 1)[1])
    except (OSError, ValueError):
        return None
    return None


@dataclass
class Tracked:
    instance_id: int
    pid: int
    port: int
    popen: subprocess.Popen | None = None
    last_check: float = 0.0
    term_sent_at: float | None = None
    tokens: float | None = None  # vLLM's generated-token total at the last check

    def poll(self) -> int | None:
        """The exit code when the process has exited (-signal for a signal), else None."""
        if self.popen is not None:
            return self.popen.poll()
        return None if pid_alive(self.pid) else UNKNOWN_EXIT


@dataclass
class NodeAgent:
    name: str
    slots: int
    omp_threads: int
    runtime: str = "transformers"
    runtime_note: str = ""  # why it is not the runtime asked for (shown on the node's admin page and /healthz)
    host: str = "127.0.0.1"
    advertise_host: str = ""  # the address the gateway uses (defaults to host, or this machine's name for 0.0.0.0)
    memory_mb: int = 0
    interval: float = 0.5
    keep_instances: bool = False
    tracked: dict[int, Tracked] = field(default_factory=dict)
    node: Node | None = None
    stopping: bool = False

    # -------------------------------------------------------------- lifecycle

    @property
    def reachable_host(self) -> str:
        if self.advertise_host:
            return self.advertise_host
        return socket.getfqdn() if self.host in ("0.0.0.0", "::") else self.host

    @property
    def run_dir(self) -> Path:
        path = conf.serving_dir() / "nodes" / self.name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def register(self) -> Node:
        now = timezone.now()
        node, _created = Node.objects.update_or_create(
            name=self.name,
            defaults={
                "hostname": socket.gethostname(),
                "runtime": self.runtime,
                "runtime_note": self.runtime_note,
                "slots": self.slots,
                "memory_mb": self.memory_mb or machine_memory_mb(),
                "omp_threads": self.omp_threads,
                "cpus": cpus.format_list(cpus.serving()),
                "agent_pid": os.getpid(),
                "started_at": now,
                "heartbeat_at": now,
            },
        )
        self.node = node
        return node

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.register()
        self.adopt_or_kill()
        logger.info(
            "node agent %s: %s slots, %s threads per instance, runtime %s",
            self.name,
            self.slots,
            self.omp_threads,
            self.runtime,
        )
        last_beat = 0.0
        while not self.stopping:
            started = time.monotonic()
            try:
                if started - last_beat >= 1.0:
                    beat = Node.objects.filter(pk=self.node.pk).update(
                        heartbeat_at=timezone.now(), agent_pid=os.getpid()
                    )
                    if not beat:  # the row was deleted (admin, a test's flush): register again
                        self.register()
                    last_beat = started
                self.tick()
            except Exception:
                logger.exception("node agent tick failed")
                close_old_connections()
            time.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        self.shutdown()

    def _on_signal(self, signum, _frame) -> None:
        self.stopping = True

    def shutdown(self) -> None:
        """Stop every instance process (unless told to keep them for a later agent to adopt)."""
        if self.keep_instances:
            logger.info("node agent %s exits; %s instance(s) left running to be adopted", self.name, len(self.tracked))
            return
        for tracked in list(self.tracked.values()):
            signal_group(tracked.pid, signal.SIGTERM)
        deadline = time.monotonic() + conf.stop_grace()
        while time.monotonic() < deadline and any(t.poll() is None for t in self.tracked.values()):
            time.sleep(0.1)
        for tracked in list(self.tracked.values()):
            if tracked.poll() is None:
                signal_group(tracked.pid, signal.SIGKILL)
            self._forget(tracked)
            states.instance_gone(tracked.instance_id, error="The node agent stopped.")
        # Tell the control plane at once rather than after the heartbeat timeout.
        Node.objects.filter(pk=self.node.pk).update(heartbeat_at=None)
        self._reconcile({t.instance_id for t in self.tracked.values()})
        logger.info("node agent %s stopped", self.name)

    # -------------------------------------------------------------- pid files and adoption

    def _pidfile(self, instance_id: int) -> Path:
        return self.run_dir / f"instance-{instance_id}.json"

    def _remember(self, tracked: Tracked) -> None:
        self.tracked[tracked.instance_id] = tracked
        self._pidfile(tracked.instance_id).write_text(json.dumps({"pid": tracked.pid, "port": tracked.port}))

    def _forget(self, tracked: Tracked) -> None:
        """Stop tracking an instance whose server exited or was killed, and end what is left of its process
        group (a runtime's workers outlive their server otherwise)."""
        signal_group(tracked.pid, signal.SIGKILL)
        self.tracked.pop(tracked.instance_id, None)
        self._pidfile(tracked.instance_id).unlink(missing_ok=True)
        try:  # the adapters it held went with it
            from common.redis import redis_client

            from .adapters import forget_instance

            with redis_client(1) as client:
                forget_instance(client, tracked.instance_id)
        except Exception:
            logger.debug("could not forget the adapters of instance %s", tracked.instance_id)

    def adopt_or_kill(self) -> None:
        """After a restart: keep what is still wanted and healthy, kill the rest, mark lost instances failed."""
        wanted = {i.pk: i for i in Instance.objects.filter(node=self.node, state__in=HOLDS_SLOT)}
        adopted: set[int] = set()
        for pidfile in sorted(self.run_dir.glob("instance-*.json")):
            try:
                info = json.loads(pidfile.read_text())
                instance_id = int(pidfile.stem.split("-", 1)[1])
                pid, port = int(info["pid"]), int(info["port"])
            except (OSError, ValueError, KeyError, IndexError):
                pidfile.unlink(missing_ok=True)
                continue
            ours = pid_alive(pid) and process_instance_id(pid) == instance_id
            instance = wanted.get(instance_id)
            keep = (
                ours
                and instance is not None
                and instance.state in (InstanceState.STARTING, InstanceState.READY, InstanceState.DRAINING)
                and (instance.state == InstanceState.STARTING or self._healthy(instance))
            )
            if keep:
                self.tracked[instance_id] = Tracked(instance_id, pid, port)
                adopted.add(instance_id)
                logger.info("adopted instance %s (pid %s, port %s)", instance_id, pid, port)
                continue
            if ours:
                logger.info("killing instance %s (pid %s) left by a previous agent", instance_id, pid)
                signal_group(pid, signal.SIGKILL)
            pidfile.unlink(missing_ok=True)
        now = timezone.now()
        lost = [pk for pk in wanted if pk not in adopted]
        for instance in Instance.objects.filter(pk__in=lost):
            if instance.state == InstanceState.STOPPING:
                states.instance_move(instance, InstanceState.STOPPED, stopped_at=now)
            else:
                states.instance_move(
                    instance,
                    InstanceState.FAILED,
                    stopped_at=now,
                    error=instance.error or "Lost when its node agent restarted.",
                )
        if lost:
            self._reconcile(set(lost))

    # -------------------------------------------------------------- the loop

    def tick(self) -> None:
        changed: set[int] = set()
        instances = list(Instance.objects.filter(node=self.node, state__in=HOLDS_SLOT).select_related("deployment"))
        wanted_ids = {i.pk for i in instances}
        for instance in instances:
            try:
                if self._step(instance):
                    changed.add(instance.pk)
            except Exception:
                logger.exception("instance %s", instance.pk)
        # A process whose instance row went away (deleted in the admin): stop it.
        for tracked in [t for t in self.tracked.values() if t.instance_id not in wanted_ids]:
            signal_group(tracked.pid, signal.SIGKILL)
            self._forget(tracked)
        if changed:
            self._reconcile(changed)

    def _step(self, instance: Instance) -> bool:
        """Move one instance towards what its state asks; True when its state changed."""
        tracked = self.tracked.get(instance.pk)
        state = instance.state
        now = timezone.now()
        if state == InstanceState.STOPPING:
            return self._stop(instance, tracked)
        if tracked is None:
            if state == InstanceState.STARTING and instance.pid is None:
                self._start(instance)
                return False
            # Wanted but not running here (killed outside the agent, or never recorded): failed, to be replaced.
            return self._mark(instance, InstanceState.FAILED, error=instance.error or "The process is gone.")
        code = tracked.poll()
        if code is not None:
            self._forget(tracked)
            if state == InstanceState.DRAINING:
                return self._mark(instance, InstanceState.STOPPED)
            if state == InstanceState.STARTING:
                return self._mark(
                    instance, InstanceState.FAILED, error=self._load_error(instance, code), load_failed=True
                )
            return self._mark(
                instance, InstanceState.FAILED, error=_("The server process exited (%(exit)s).") % {"exit": _exit(code)}
            )
        if state == InstanceState.STARTING:
            if self._healthy(instance):
                return self._mark(instance, InstanceState.READY, ready_at=now, health_failures=0, checked_at=now)
            if instance.started_at and (now - instance.started_at).total_seconds() > conf.start_timeout():
                signal_group(tracked.pid, signal.SIGKILL)
                return self._mark(instance, InstanceState.FAILED, load_failed=True, error=self._timeout_error(instance))
            return False
        if state in (InstanceState.READY, InstanceState.UNHEALTHY):
            if time.monotonic() - tracked.last_check < HEALTH_EVERY:
                return False
            tracked.last_check = time.monotonic()
            if self._healthy(instance):
                stuck = self._stuck(instance, tracked)
                if stuck and state == InstanceState.READY:
                    return self._mark(instance, InstanceState.UNHEALTHY, checked_at=now, error=stuck)
                if state == InstanceState.UNHEALTHY or instance.health_failures:
                    return self._mark(instance, InstanceState.READY, health_failures=0, checked_at=now)
                Instance.objects.filter(pk=instance.pk).update(checked_at=now)
                return False
            failures = instance.health_failures + 1
            if failures >= UNHEALTHY_AFTER and state == InstanceState.READY:
                return self._mark(
                    instance,
                    InstanceState.UNHEALTHY,
                    health_failures=failures,
                    error=f"/health failed {failures} times in a row.",
                )
            Instance.objects.filter(pk=instance.pk).update(health_failures=failures)
            return False
        if state == InstanceState.DRAINING:
            waited = (now - (instance.drain_started_at or now)).total_seconds()
            busy = self._in_flight(instance.pk)
            if busy <= 0 or waited >= conf.drain_timeout():
                states.instance_move(instance, InstanceState.STOPPING, stop_requested_at=now)
                return self._stop(instance, tracked)
        return False

    def _stuck(self, instance: Instance, tracked: Tracked) -> str:
        """Why the instance counts as stuck ("" when it is not): calls in flight and no token produced for
        SERVING_STALL_SECONDS (/health alone says 200 while one endless generation holds every slot). Progress is
        what the gateway saw stream through, and on vLLM also its own count of generated tokens."""
        try:
            from common.redis import redis_client

            with redis_client(1) as client:
                if instance.runtime == "vllm":
                    tokens = self._generated_tokens(instance)
                    if tokens is not None and tokens != tracked.tokens:
                        if tracked.tokens is not None:
                            client.set(inflight.progress_key(instance.pk), time.time(), ex=inflight.TTL)
                        tracked.tokens = tokens
                stalled = inflight.stalled_for(client, instance.pk)
                busy = inflight.in_flight(client, instance.pk)
        except Exception:  # Redis away: nothing to judge by
            return ""
        limit = conf.stall_seconds()
        if limit <= 0 or stalled < limit:
            return ""
        return (
            f"Stuck: {busy} {'call' if busy == 1 else 'calls'} in flight and no token produced for {stalled:.0f} s "
            f"(SERVING_STALL_SECONDS={limit:.0f})."
        )

    def _generated_tokens(self, instance: Instance) -> float | None:
        """vLLM's total of generated tokens, from its Prometheus metrics (None when it cannot be read)."""
        try:
            text = httpx.get(f"http://{instance.host}:{instance.port}/metrics", timeout=1.0).text
        except httpx.HTTPError:
            return None
        total = None
        for line in text.splitlines():
            if line.startswith("vllm:generation_tokens_total"):
                try:
                    total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
                except (IndexError, ValueError):
                    continue
        return total

    def _in_flight(self, instance_id: int) -> int:
        try:
            from common.redis import redis_client

            with redis_client(1) as client:
                return inflight.in_flight(client, instance_id)
        except Exception:  # Redis away: do not hold the drain on it
            return 0

    def _mark(self, instance: Instance, state: str, **fields) -> bool:
        return states.instance_move(instance, state, **fields)

    def _start(self, instance: Instance) -> None:
        from .runtimes import get_runtime

        runtime = get_runtime(instance.runtime)
        port = free_port(self.host)
        log_path = instance_log(instance.pk)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "SERVING_INSTANCE_ID": str(instance.pk),
            "SERVING_API_KEY": instance.api_key,
            "PYTHONUNBUFFERED": "1",
            **runtime.environment(omp_threads=self.node.omp_threads, api_key=instance.api_key),
        }
        cmd = [
            sys.executable,
            "-m",
            "deployments.launch",
            "--instance",
            str(instance.pk),
            "--host",
            self.host,
            "--port",
            str(port),
        ]
        serving_cpus = cpus.serving()
        with open(log_path, "ab") as log:
            log.write(
                f"--- {timezone.now():%Y-%m-%d %H:%M:%S} starting on {self.name}:{port}, "
                f"CPUs {cpus.format_list(serving_cpus)}\n".encode()
            )
            log.flush()
            popen = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=lambda: cpus.pin(serving_cpus),  # training keeps the others (console/cpus.py)
            )
        with transaction.atomic():
            updated = Instance.objects.filter(pk=instance.pk, state=InstanceState.STARTING, pid__isnull=True).update(
                pid=popen.pid, port=port, host=self.reachable_host, log_path=str(log_path), started_at=timezone.now()
            )
        if not updated:  # cancelled meanwhile
            signal_group(popen.pid, signal.SIGKILL)
            popen.wait(5)
            return
        self._remember(Tracked(instance.pk, popen.pid, port, popen))
        logger.info("instance %s starting: pid %s port %s", instance.pk, popen.pid, port)

    def _stop(self, instance: Instance, tracked: Tracked | None) -> bool:
        if tracked is None or tracked.poll() is not None:
            if tracked is not None:
                self._forget(tracked)
            elif instance.pid and pid_alive(instance.pid) and process_instance_id(instance.pid) == instance.pk:
                signal_group(instance.pid, signal.SIGKILL)
            return self._mark(instance, InstanceState.STOPPED)
        if tracked.term_sent_at is None:
            signal_group(tracked.pid, signal.SIGTERM)
            tracked.term_sent_at = time.monotonic()
        elif time.monotonic() - tracked.term_sent_at > conf.stop_grace():
            signal_group(tracked.pid, signal.SIGKILL)
        return False

    def _healthy(self, instance: Instance) -> bool:
        from .runtimes import get_runtime

        if not instance.port:
            return False
        try:
            response = httpx.get(
                f"http://{instance.host}:{instance.port}{get_runtime(instance.runtime).health_path}", timeout=1.0
            )
            return response.status_code == 200
        except httpx.HTTPError:
            return False

    # The error of an instance that did not load is its owner's to read (the page, the API, notifications and
    # webhooks carry it): what happened and the exception that ended it, with no server path. The log's last lines
    # (tracebacks, the paths of weights and libraries) go to the agent's log and to staff, on the deployment page.

    def _load_error(self, instance: Instance, code: int) -> str:
        tail = instance.log_tail(LOG_LINES)
        logger.warning(
            "instance %s exited while loading (%s); the last lines of %s:\n%s",
            instance.pk,
            _exit(code),
            instance.log_path,
            tail,
        )
        error = last_exception(tail)
        if error:
            return _("The server exited while loading (%(exit)s): %(error)s") % {"exit": _exit(code), "error": error}
        return _("The server exited while loading (%(exit)s). Its log is kept for the operators.") % {
            "exit": _exit(code)
        }

    def _timeout_error(self, instance: Instance) -> str:
        tail = instance.log_tail(LOG_LINES)
        seconds = f"{conf.start_timeout():.0f}"
        logger.warning(
            "instance %s not healthy %s s after start; the last lines of %s:\n%s",
            instance.pk,
            seconds,
            instance.log_path,
            tail,
        )
        error = last_exception(tail)
        if error:
            return _("Not healthy %(seconds)s s after start; the last error in its log: %(error)s") % {
                "seconds": seconds,
                "error": error,
            }
        return _("Not healthy %(seconds)s s after start. Its log is kept for the operators.") % {"seconds": seconds}

    def _reconcile(self, instance_ids: set[int]) -> None:
        from .services import deployment_reconcile

        for deployment_id in set(Instance.objects.filter(pk__in=instance_ids).values_list("deployment_id", flat=True)):
            try:
                deployment_reconcile(deployment_id=deployment_id)
            except Exception:
                logger.exception("reconciling deployment %s", deployment_id)


def _exit(code: int) -> str:
    if code == UNKNOWN_EXIT:
        return _("exit status unknown")
    if code < 0:
        try:
            return _("signal %(signal)s") % {"signal": signal.Signals(-code).name}
        except ValueError:
            return _("signal %(signal)s") % {"signal": -code}
    return _("exit code %(code)s") % {"code": code}


def default_node_name() -> str:
    return settings.SERVING_NODE_NAME
