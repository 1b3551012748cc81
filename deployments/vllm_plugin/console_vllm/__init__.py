"""The console's vLLM plugin, loaded by every vLLM process of an instance (``vllm.general_plugins``; the folder
above this package is on the instance's PYTHONPATH, its dist-info names the entry point; nothing is installed).

On vLLM's CPU platform it swaps the multi-LoRA ops for grouped ones (:mod:`console_vllm.punica`): vLLM's own
gather every token's padded adapter weights for every layer (``CONSOLE_VLLM_GROUPED_LORA=0`` keeps them). With
``CONSOLE_VLLM_FORK_ENGINE=1`` (the console sets it where the model runs in the engine's own process,
``VLLM_ENABLE_V1_MULTIPROCESSING=0``) the API server's engine process is forked rather than spawned. On a GPU
vLLM's kernels and ways are kept."""

import os

WRAPPER = "console_vllm.punica.GroupedPunicaWrapperCPU"


def register() -> None:
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    cls = type(current_platform)
    if os.environ.get("CONSOLE_VLLM_FORK_ENGINE") == "1":
        _fork_engine(cls)
    if os.environ.get("CONSOLE_VLLM_GROUPED_LORA", "1") == "0" or getattr(cls, "_console_grouped_lora", False):
        return
    cls.get_punica_wrapper = classmethod(lambda _cls: WRAPPER)
    cls._console_grouped_lora = True


def _fork_engine(cls) -> None:
    """Have the API server start its engine process by fork. vLLM's CPU platform sets spawn for every process it
    starts (``check_and_update_config``, its worker processes included; with the model in the engine's own process
    there are none), and a spawned engine is a new Python importing vLLM and PyTorch again: 17 s of a 44 s start
    on a 2-CPU AVX2 EPYC (vLLM forks it on a GPU, its default). The forked
    engine loads the model and starts its OpenMP threads itself (tests/test_serving_vllm.py checks the fork and
    serves through it)."""
    if getattr(cls, "_console_fork_engine", False):
        return
    original = cls.check_and_update_config

    def check_and_update_config(_cls, vllm_config) -> None:
        original(vllm_config)
        os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "fork"

    cls.check_and_update_config = classmethod(check_and_update_config)
    cls._console_fork_engine = True
