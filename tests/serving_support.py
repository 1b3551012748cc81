"""Fixtures for serving tests: a LoRA adapter of the tiny model, and a live stack of real processes: the console
under uvicorn (ASGI, the path the gateway streams through in production) and a node agent that starts real
``transformers serve`` instances of the tiny model. Both use the test database."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection

from . import services

ROOT = Path(__file__).resolve().parent.parent


def vllm_python() -> str:
    """vLLM's Python: VLLM_PYTHON, else .venv-vllm's (which ``./run test`` makes), else ""."""
    found = os.environ.get("VLLM_PYTHON") or ""
    local = ROOT / ".venv-vllm" / "bin" / "python"
    return found or (str(local) if local.exists() else "")


def vllm_why_not() -> str:
    """Why vLLM cannot run here ("" when it can): the node agent's own check (deployments.runtimes.choose)."""
    python = vllm_python()
    if not python:
        return "vLLM is not installed: ./run test installs it into .venv-vllm (or set VLLM_PYTHON)"
    from deployments import runtimes

    os.environ["VLLM_PYTHON"] = python
    runtime, note = runtimes.choose("auto")
    return "" if runtime == "vllm" else note


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_lora_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter of the tiny model (random, non-zero B so that merging changes the weights)."""
    return _random_lora(tiny_model_dir, tmp_path_factory.mktemp("tiny-lora"), seed=1)


@pytest.fixture(scope="session")
def other_lora_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """Another one, of other random weights (a checkpoint's, say)."""
    return _random_lora(tiny_model_dir, tmp_path_factory.mktemp("other-lora"), seed=2)


def _random_lora(tiny_model_dir: Path, out: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny_model_dir / name).exists():
            shutil.copy(tiny_model_dir / name, out / name)
    return out


def _env(db_name: str, extra: dict | None = None) -> dict:
    # The servers run with Django's async safety on, as in production, even when started beside a browser test
    # (tests/conftest.py: browser turns it off in the test process while Playwright's loop runs).
    return {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CONSOLE_TEST_WORKER_DB": db_name,
        "SERVING_NODE_TIMEOUT": "8",
        "SERVING_STOP_GRACE": "3",
        "SERVING_POOL_INSTANCES": "0",
        **(extra or {}),
    }


@dataclass
class Stack:
    db_name: str
    url: str
    web: subprocess.Popen
    agent: subprocess.Popen | None = None
    agent_starts: int = 0

    @property
    def api(self) -> str:
        return f"{self.url}/api/paas/v4"

    def start_agent(self, *, slots: int = 3) -> subprocess.Popen:
        log = open(Path(settings.VAR_DIR) / f"agent-{self.agent_starts}.log", "ab")  # noqa: SIM115
        self.agent = subprocess.Popen(
            [sys.executable, "manage.py", "serve_node", "--name", "test-node", "--slots", str(slots), "--threads", "1"],
            cwd=ROOT,
            env=_env(self.db_name),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.agent_starts += 1
        from deployments.models import Node

        from .jobs_support import wait_for

        wait_for(
            lambda: Node.objects.filter(name="test-node", agent_pid=self.agent.pid).exists(),
            timeout=60,
            what="the node agent to register",
        )
        return self.agent

    def kill_agent(self) -> None:
        os.killpg(self.agent.pid, signal.SIGKILL)
        self.agent.wait(10)

    def stop_agent(self) -> None:
        services.stop(self.agent, timeout=30)


def start_web(
    db_name: str, extra_env: dict | None = None, server: list[str] | None = None
) -> tuple[subprocess.Popen, str]:
    """The console under uvicorn on a free port, on the test database (``server``: another command that takes
    uvicorn's arguments and serves the console, a profiler's, say)."""
    port = free_port()
    log = open(Path(settings.VAR_DIR) / "web.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            *(server or [sys.executable, "-m", "uvicorn", "console.asgi:application"]),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--lifespan",
            "off",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=_env(db_name, extra_env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("uvicorn exited at start; see var/.../web.log")
        try:
            httpx.get(f"{url}/api/paas/v4/nothing", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    services.stop(proc)
    raise RuntimeError("uvicorn did not answer within 60 s")


def kill_leftover_instances() -> list[int]:
    """Kill instance processes a test left behind (pid files of the test node); return their pids."""
    killed = []
    for pidfile in (Path(settings.VAR_DIR) / "serving" / "nodes").glob("*/instance-*.json"):
        try:
            pid = json.loads(pidfile.read_text())["pid"]
            os.killpg(pid, signal.SIGKILL)
            killed.append(pid)
        except (OSError, ValueError, KeyError, ProcessLookupError):
            pass
        pidfile.unlink(missing_ok=True)
    return killed


@pytest.fixture(scope="module")
def serving_stack(django_db_setup, django_db_blocker, celery_worker):
    with django_db_blocker.unblock():
        db_name = connection.settings_dict["NAME"]
    web, url = start_web(db_name)
    stack = Stack(db_name, url, web)
    try:
        yield stack
    finally:
        if stack.agent is not None:
            stack.stop_agent()
        services.stop(web)
        kill_leftover_instances()


def _processes():
    """Each live process as (its /proc folder, its state and the fields after it in ``stat``)."""
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            yield proc_dir, (proc_dir / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue


def instance_pids(db_name: str) -> list[int]:
    """The process groups of this test run's live instance processes (found by their environment), one per
    instance: its leader's pid, what the instance row records. A runtime may run workers beside its server
    (``transformers serve`` 5.25 generates in a child process); they are counted with their group."""
    marker = b"CONSOLE_TEST_WORKER_DB=" + db_name.encode() + b"\0"
    groups = set()
    for proc_dir, fields in _processes():
        try:
            environ = (proc_dir / "environ").read_bytes() + b"\0"
        except OSError:
            continue
        if b"SERVING_INSTANCE_ID=" in environ and marker in environ and fields[0] != "Z":
            groups.add(int(fields[2]))  # the process group id
    return sorted(groups)


def group_cmdlines(pgid: int) -> dict[int, bytes]:
    """The command lines of a process group's processes, by pid."""
    found = {}
    for proc_dir, fields in _processes():
        try:
            if int(fields[2]) == pgid:
                found[int(proc_dir.name)] = (proc_dir / "cmdline").read_bytes()
        except OSError:
            continue
    return found
