"""The console's vLLM plugin, loaded by every vLLM process of an instance (``vllm.general_plugins``; the folder
above this package is on the instance's PYTHONPATH, its dist-info names the entry point; nothing is installed).

On vLLM's CPU platform it swaps the multi-LoRA ops for grouped ones (:mod:`console_vllm.punica`): vLLM's own
gather every token's padded adapter weights for every layer. On a GPU vLLM's kernels are kept."""

import os

WRAPPER = "console_vllm.punica.GroupedPunicaWrapperCPU"


def register() -> None:
    if os.environ.get("CONSOLE_VLLM_GROUPED_LORA", "1") == "0":
        return
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    cls = type(current_platform)
    if getattr(cls, "_console_grouped_lora", False):
        return
    cls.get_punica_wrapper = classmethod(lambda _cls: WRAPPER)
    cls._console_grouped_lora = True
