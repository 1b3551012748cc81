"""The console's vLLM plugin (deployments/vllm_plugin) in vLLM's own Python: loaded through its entry point as an
instance loads it (the folder on PYTHONPATH, nothing installed), it puts its multi-LoRA wrapper on vLLM's CPU
platform, builds its C kernel (OpenMP, on PyTorch's own runtime), and its paths (kernel, grouped products, both
in one step) compute what a float64 reference does, as closely as vLLM's own op, in float32 and bfloat16, rows
without an adapter untouched; its skipped embedding and LM-head LoRA leave what vLLM's ops leave. Skipped with the
reason where vLLM cannot run (tests/test_serving_vllm.py serves through it on real instances)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .serving_support import ROOT, vllm_python, vllm_why_not

WHY_NOT = vllm_why_not()
if WHY_NOT:
    print(f"\ntests/test_vllm_plugin.py skipped: {WHY_NOT}", file=sys.stderr)
pytestmark = [pytest.mark.timeout(600), pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT)]
PLUGIN = ROOT / "deployments" / "vllm_plugin"


def _run(tmp_path, script: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PLUGIN), "CONSOLE_VLLM_CACHE": str(tmp_path / "cache")}
    return subprocess.run(
        [vllm_python(), "-c", script], env=env, capture_output=True, text=True, timeout=500, cwd=tmp_path
    )


def test_vllm_finds_the_plugin_by_its_entry_point(tmp_path):
    done = _run(
        tmp_path,
        "from vllm.plugins import load_general_plugins; load_general_plugins(); "
        "from vllm.platforms import current_platform as p; print(p.get_punica_wrapper())",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "console_vllm.punica.GroupedPunicaWrapperCPU"


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> tuple[dict, Path]:
    """tests/vllm_plugin_check.py's findings (run once), and the folder it ran in."""
    where = tmp_path_factory.mktemp("plugin_check")
    done = _run(where, (ROOT / "tests" / "vllm_plugin_check.py").read_text())
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), where


def test_the_plugins_lora_linear_equals_the_reference_in_both_paths_and_dtypes(checked):
    found, tmp_path = checked
    assert found["wrapper"] == "console_vllm.punica.GroupedPunicaWrapperCPU"
    assert found["kernel"], "the C kernel was not built (is cc installed?)"
    built = list((tmp_path / "cache").glob("lora_kernel-*.so"))
    assert built
    # built with OpenMP, and it runs on PyTorch's runtime: one in the process, not a second pool of threads
    assert any(b"libgomp.so.1" in so.read_bytes() for so in built)
    assert len(found["openmp_runtimes"]) == 1, found["openmp_runtimes"]
    results = found["results"]
    assert {(r["dtype"], r["path"]) for r in results} == {
        (d, p) for d in ("float32", "bfloat16") for p in ("kernel", "grouped", "both")
    }
    for r in results:
        # float32: rounding only; bfloat16: the layer's own rounding of y, as vLLM's op has it.
        bound = 1e-5 if r["dtype"] == "float32" else max(0.012, 1.5 * r["vllm_error"])
        assert r["error"] <= bound, r
        if r["case"] == "no adapter":
            assert r["error"] == 0.0, r


def test_the_skipped_embedding_and_lm_head_lora_leave_what_vllms_ops_leave(checked):
    """The wrapper skips the embedding's and the LM head's LoRA for a batch whose adapters have no weights there
    (every console fine-tune); with one that has them, and after vLLM writes one into a slot, it computes them."""
    found = checked[0]["skipped_ops"]
    assert set(found) == {
        "zero weights",
        "zero weights, slot 1 rewritten",
        "one with weights",
        "one with weights, slot 1 rewritten",
    }
    for case, seen in found.items():
        assert seen["embedding"] and seen["lm_head"], (case, seen)
        assert seen["changed"] == (case != "zero weights"), (case, seen)
