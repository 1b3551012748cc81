"""A training task beside a busy serving instance, before and after the CPU split (console/cpus.py).

On one machine (``./run up``, a small team's server) training and serving used to share every core: a training
benchmark run while an instance generated measured a third of its quiet speed. This runs the
``bench_training.py`` work (our engine, LoRA r16 all-linear, batch 8, fp32) four times in one run:

1. alone on every CPU (as before the split);
2. on every CPU, with an instance on every CPU generating beside it (before the split);
3. alone on the training CPUs of the default split (``TRAINING_CPUS=auto``);
4. on the training CPUs, with the instance pinned to the serving CPUs generating beside it (``./run up`` now).

The instance is what ``./run up``'s node agent would start here: vLLM (``.venv-vllm``) with the pool's flags when
it runs, else ``transformers serve``; 4 clients stream 128-token answers from it for the whole training run. It
prints each run's tokens/s, the ratios 2/1 (before) and 4/3 (after, target >= 0.8), the instance's own tokens/s,
and the machine.

    .venv/bin/python tests/perf/bench_training_neighbour.py              # 96 examples, 1 epoch each run
    .venv/bin/python tests/perf/bench_training_neighbour.py --runtime transformers
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
import machine  # noqa: E402  (tests/perf/machine.py)

from common.processes import stop_group  # noqa: E402

MODEL_DIR = Path(os.environ.get("CONSOLE_MODELS_DIR") or REPO / "var" / "models") / "smollm2-135m-instruct"
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"


def default_split() -> tuple[list[int], list[int]]:
    """console.cpus.split() with TRAINING_CPUS and SERVING_CPUS at auto (the same rule, without Django)."""
    cpus = sorted(os.sched_getaffinity(0))
    serving_n = max(1, len(cpus) // 4)
    return (cpus[:-serving_n] if len(cpus) > 1 else cpus), cpus[-serving_n:]


def cpu_list(cpus: list[int]) -> str:
    return ",".join(str(c) for c in cpus)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Instance:
    """A serving process started as the node agent would, and clients keeping it generating."""

    def __init__(self, runtime: str, cpus: list[int], log: Path):
        self.port = free_port()
        threads = len(cpus)
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "false",
        }
        if runtime == "vllm":
            env.update(
                OMP_NUM_THREADS=str(max(1, threads - 1)),
                VLLM_CPU_OMP_THREADS_BIND="nobind",
                VLLM_CPU_KVCACHE_SPACE="2",
                VLLM_ALLOW_RUNTIME_LORA_UPDATING="True",
            )
            cmd = [
                str(VLLM_PYTHON),
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                str(MODEL_DIR),
                "--served-model-name",
                "base",
                "--enable-lora",
                "--max-lora-rank",
                "64",
                "--max-loras",
                "8",
                "--max-cpu-loras",
                "8",
                "--max-model-len",
                "2048",
            ]
            self.model = "base"
        else:
            cmd = [str(Path(sys.executable).parent / "transformers"), "serve", "--device", "cpu"]
            self.model = str(MODEL_DIR)
        cmd = ["taskset", "-c", cpu_list(cpus), *cmd, "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
        )
        self.tokens = 0
        self._stop = threading.Event()
        self._clients: list[threading.Thread] = []

    def wait_ready(self, timeout: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the instance exited ({self.proc.returncode})")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    self._call()  # the first answer (the model loaded, kernels warmed)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError("the instance did not become ready")

    def _call(self) -> int:
        import httpx

        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Tell me a long story about a cat."}],
            "max_tokens": 128,
            "temperature": 0.8,
            "stream": False,
        }
        r = httpx.post(f"http://127.0.0.1:{self.port}/v1/chat/completions", json=body, timeout=600)
        r.raise_for_status()
        return (r.json().get("usage") or {}).get("completion_tokens") or 0

    def start_load(self, clients: int = 4) -> None:
        self.tokens, self._started = 0, time.monotonic()

        def loop():
            while not self._stop.is_set():
                try:
                    self.tokens += self._call()
                except Exception:  # noqa: BLE001 - a failed call is just not counted
                    time.sleep(0.5)

        self._stop.clear()
        self._clients = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
        for t in self._clients:
            t.start()

    def stop_load(self) -> float:
        """Stop the clients; the instance's tokens/s while they ran."""
        self._stop.set()
        seconds = time.monotonic() - self._started
        for t in self._clients:
            t.join(timeout=600)
        return self.tokens / seconds

    def stop(self) -> None:
        stop_group(self.proc, grace=30)


def train(cpus: list[int], args) -> dict:
    """One bench_training.py run of our engine, kept to ``cpus`` with as many threads."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            "taskset",
            "-c",
            cpu_list(cpus),
            sys.executable,
            str(HERE / "bench_training.py"),
            "--only",
            "ours",
            "--epochs",
            str(args.epochs),
            "--examples",
            str(args.examples),
            "--threads",
            str(len(cpus)),
            "--json",
            str(out),
            "--busy",
        ]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if proc.returncode or not out.exists():
            raise RuntimeError(f"training failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        return json.loads(out.read_text())["results"]["ours"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", choices=["auto", "vllm", "transformers"], default="auto")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--examples", type=int, default=96)
    parser.add_argument("--busy", action="store_true", help="measure even though the machine is busy")
    parser.add_argument(
        "--skip-before",
        action="store_true",
        help="leave out run 2 (training and the instance sharing every CPU: slow, it measures the old behaviour)",
    )
    args = parser.parse_args()
    runtime = args.runtime
    if runtime == "auto":
        ok = (
            VLLM_PYTHON.exists()
            and subprocess.run([str(VLLM_PYTHON), "-c", "import vllm.platforms"], capture_output=True).returncode == 0
        )
        runtime = "vllm" if ok else "transformers"

    machine.require_quiet(args.busy)
    report = machine.report()
    print(report, flush=True)
    every = sorted(os.sched_getaffinity(0))
    training, serving = default_split()
    print(
        f"CPUs: {cpu_list(every)}; default split: training {cpu_list(training)}, serving {cpu_list(serving)}; "
        f"instance: {runtime}; {args.examples} examples x {args.epochs} epoch(s) a run",
        flush=True,
    )
    logs = Path(tempfile.mkdtemp(prefix="bench-neighbour-"))
    results: dict[str, dict] = {}

    def run(name: str, cpus: list[int], instance: Instance | None) -> None:
        if instance is not None:
            instance.start_load()
        try:
            result = train(cpus, args)
        finally:
            served = instance.stop_load() if instance is not None else None
        result["instance_tokens_per_second"] = served
        results[name] = result
        beside = f"; the instance meanwhile {served:.1f} tokens/s" if served is not None else ""
        print(
            f"{name:44s} {result['tokens_per_second']:7.1f} tokens/s ({result['cores_used']:.2f} cores busy){beside}",
            flush=True,
        )

    run("1. alone, every CPU", every, None)
    if not args.skip_before:
        shared = Instance(runtime, every, logs / "shared.log")
        try:
            shared.wait_ready()
            run("2. every CPU, instance on every CPU", every, shared)
        finally:
            shared.stop()
    run("3. alone, training CPUs", training, None)
    pinned = Instance(runtime, serving, logs / "pinned.log")
    try:
        pinned.wait_ready()
        run("4. training CPUs, instance on serving CPUs", training, pinned)
    finally:
        pinned.stop()

    def tps(name: str) -> float:
        return results[name]["tokens_per_second"]

    print(f"\n{report}")
    if "2. every CPU, instance on every CPU" in results:
        before = tps("2. every CPU, instance on every CPU") / tps("1. alone, every CPU")
        print(f"before the split: beside a busy instance {before:.2f}x its speed alone")
    after = tps("4. training CPUs, instance on serving CPUs") / tps("3. alone, training CPUs")
    print(
        f"after (./run up's defaults): {after:.2f}x its speed alone (target >= 0.8); "
        f"alone on its CPUs it trains at {tps('3. alone, training CPUs') / tps('1. alone, every CPU'):.2f}x "
        "the speed it had on every CPU"
    )
    print(
        f"beside the busy instance on its CPUs it trains at "
        f"{tps('4. training CPUs, instance on serving CPUs') / tps('1. alone, every CPU'):.2f}x "
        "its speed alone on every CPU"
    )
    print(f"(instance logs in {logs})")


if __name__ == "__main__":
    main()
