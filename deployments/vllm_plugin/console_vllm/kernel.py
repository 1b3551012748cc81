"""Builds and loads ``lora_kernel.c`` (plain C, no headers but the C library's, called through ctypes).

Built once a machine with the C compiler (``CC``, else ``cc``; vLLM's own compiled mode on a CPU needs one too),
for that CPU (``-march=native``), into ``CONSOLE_VLLM_CACHE`` (else ``~/.cache/console-vllm``) under a name
from the source and the CPU's flags; an instance starting beside another waits for nothing (each writes its own
temporary file and renames it). Without a compiler the plugin keeps its grouped PyTorch products.

With OpenMP (``-fopenmp``, else built without it) the kernel splits a call's rows between the process's OpenMP
threads: PyTorch's own, since the library's name (``libgomp.so.1``) is the one torch has loaded already, so the
kernel runs on the threads vLLM's model runs on, not on threads beside them (a helper thread of the kernel's own
fought vLLM's spinning OpenMP thread for the CPU: 67 against 112 tokens/s, docs/benchmarks.md)."""

import ctypes
import hashlib
import logging
import os
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("lora_kernel.c")
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math"]
P = ctypes.c_void_p
I64 = ctypes.c_int64


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return ""


def build() -> Path:
    try:
        return _build([*FLAGS, "-fopenmp"])
    except RuntimeError:  # a compiler without OpenMP: one thread
        return _build(FLAGS)


def _build(flags: list[str]) -> Path:
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join(flags).encode() + _cpu_flags().encode()).hexdigest()[:16]
    cache = Path(os.environ.get("CONSOLE_VLLM_CACHE") or Path.home() / ".cache" / "console-vllm")
    lib = cache / f"lora_kernel-{key}.so"
    if not lib.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_name(f"{lib.name}.{os.getpid()}.tmp")
        cc = os.environ.get("CC") or "cc"
        done = subprocess.run(
            [cc, *flags, "-shared", "-fPIC", "-o", str(tmp), str(SOURCE)], capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"{cc} failed: {done.stderr.strip()[-500:]}")
        os.replace(tmp, lib)
    return lib


def load():
    """The kernel's function, or None (saying why in the log) where it cannot be built."""
    try:
        fn = ctypes.CDLL(str(build())).console_lora_apply
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        log.warning("console_vllm: the LoRA kernel could not be built (%s); using grouped PyTorch products", exc)
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int, I64, P, P, I64, I64, P, I64, I64, P, P, P, P, P, P, ctypes.c_float]
    return fn
