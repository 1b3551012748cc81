"""What this server can really do with a base model, and the reason where it cannot.

The catalog says what the platform offers (methods, training types); this says
what the engine and the serving runtime here can do with it: the training
engine trains causal language models of text that transformers implements
natively (no ``trust_remote_code``), in fp32 with AdamW, on the memory of a
training node; serving runs the same architectures. Every "no" carries a reason
the form, the API and the model square show.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.utils.translation import gettext as _

# Bytes of memory a parameter needs while training in fp32 with AdamW: weights, gradients, two moments.
FULL_BYTES_PER_PARAMETER = 16
# LoRA keeps the frozen weights (fp32 on the CPU path) and trains a small fraction.
LORA_BYTES_PER_PARAMETER = 4
# Activations, buffers and the rest of the process: what is added on top of the parameters' share.
OVERHEAD_FRACTION = 0.25


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


@dataclass
class Capabilities:
    """Per method, training type and serving: a ``Verdict``; plus what was read to decide."""

    sft: Verdict
    dpo: Verdict
    lora: Verdict
    full: Verdict
    serve: Verdict
    architecture: str = ""
    memory: dict[str, int] = field(default_factory=dict)
    blocker: str = ""  # what stops everything, whatever the weights: modality, architecture, remote code

    @property
    def can_train(self) -> bool:
        return bool((self.sft or self.dpo) and (self.lora or self.full))

    @property
    def train_reason(self) -> str:
        """Why the model cannot be fine-tuned at all here ("" when it can)."""
        if self.can_train:
            return ""
        return next((v.reason for v in (self.sft, self.lora, self.dpo, self.full) if not v and v.reason), "")

    def method(self, name: str) -> Verdict:
        return {"sft": self.sft, "dpo": self.dpo}.get(name, Verdict(False, _("Unknown method %(m)s.") % {"m": name}))

    def training_type(self, name: str) -> Verdict:
        return {"lora": self.lora, "full": self.full}.get(
            name, Verdict(False, _("Unknown training type %(t)s.") % {"t": name})
        )

    def as_dict(self) -> dict:
        return {
            name: {"ok": verdict.ok, "reason": verdict.reason}
            for name, verdict in (
                ("sft", self.sft),
                ("dpo", self.dpo),
                ("lora", self.lora),
                ("full", self.full),
                ("serve", self.serve),
            )
        }


@lru_cache(maxsize=1)
def causal_lm_types() -> frozenset[str]:
    """The model types transformers implements as causal LMs, read without importing torch.

    ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` is a literal in transformers' source; importing the
    module would import torch (seconds, hundreds of MB) in the web process.
    """
    spec = importlib.util.find_spec("transformers")
    if spec and spec.submodule_search_locations:
        source = Path(next(iter(spec.submodule_search_locations))) / "models" / "auto" / "modeling_auto.py"
        try:
            tree = ast.parse(source.read_text(encoding="utf-8"))
            for node in tree.body:
                if (
                    isinstance(node, ast.Assign)
                    and any(
                        isinstance(t, ast.Name) and t.id == "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES" for t in node.targets
                    )
                    and isinstance(node.value, ast.Call)
                    and node.value.args
                ):
                    return frozenset(key for key, _value in ast.literal_eval(node.value.args[0]))
        except (OSError, SyntaxError, ValueError):
            pass
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return frozenset(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def training_memory_bytes() -> int:
    """Memory of a training node: the setting, else this machine's RAM."""
    configured = settings.TRAINING_NODE_MEMORY_GB
    if configured:
        return int(float(configured) * 1024**3)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # pragma: no cover - non-POSIX
        return 16 * 1024**3


@dataclass(frozen=True)
class TrainingNode:
    """Where a training task runs: the memory it has (one GPU's, or the RAM of a CPU node)."""

    memory: int
    gpu: bool

    @property
    def bf16(self) -> bool:
        """The engine trains in bf16 on a GPU (precision "auto"), in fp32 on a CPU."""
        return self.gpu


@lru_cache(maxsize=1)
def _local_gpu_memory() -> int:
    """Memory of this host's first GPU, or 0; torch is imported only where an NVIDIA driver is loaded."""
    if not Path("/proc/driver/nvidia/gpus").is_dir():
        return 0
    try:
        import torch

        return torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else 0
    except Exception:  # a driver without a usable device
        return 0


def training_node() -> TrainingNode:
    """The training node's memory: ``TRAINING_NODE_GPU_MEMORY_GB`` (0: a CPU node), else this host's GPU, else
    ``TRAINING_NODE_MEMORY_GB`` or this machine's RAM."""
    gpu_gb = settings.TRAINING_NODE_GPU_MEMORY_GB
    if gpu_gb is None:
        gpu = _local_gpu_memory()
    else:
        gpu = int(float(gpu_gb) * 1024**3)
    if gpu > 0:
        return TrainingNode(gpu, True)
    return TrainingNode(training_memory_bytes(), False)


def memory_needed(parameters: int, training_type: str, *, bf16: bool = False) -> int:
    """The model's own share, before a dataset is chosen (the task's estimate: jobs.services.job_memory_estimate).
    LoRA's frozen weights are bf16 on a GPU node; full fine-tuning keeps fp32 master weights everywhere."""
    per = FULL_BYTES_PER_PARAMETER if training_type == "full" else LORA_BYTES_PER_PARAMETER // (2 if bf16 else 1)
    return int(parameters * per * (1 + OVERHEAD_FRACTION))


def _gib(n: int) -> str:
    return f"{n / 1024**3:,.1f} GiB"


def _read_config(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def model_config(model) -> dict:
    """The base model's config.json as a dict ({} where the weights' config is not on this server)."""
    return _read_config(model.config_json())


def capabilities_of(model) -> Capabilities:
    no = Verdict
    present, where = model.weights_status()
    config = _read_config(model.config_json())
    architecture = config.get("model_type") or model.architecture

    # What stops everything: modality, architecture, remote code.
    blocker = ""
    if model.modality != "text":
        blocker = _("The training engine and serving runtime here handle text models only; this is an %(m)s model.") % {
            "m": model.get_modality_display().lower()
        }
    elif config.get("auto_map"):
        blocker = _("Its code ships with the weights (trust_remote_code), which this server does not run.")
    elif not architecture:
        blocker = _("Its architecture is unknown: the weights are not here and the catalog does not name it.")
    elif architecture not in causal_lm_types():
        blocker = _("transformers has no causal language model for the %(a)s architecture.") % {"a": architecture}
    missing = "" if present else where

    def verdict(offered: bool, not_offered: str, extra: str = "") -> Verdict:
        if not offered:
            return no(False, not_offered)
        if blocker:
            return no(False, blocker)
        if missing:
            return no(False, _("Weights missing: %(why)s") % {"why": missing})
        if extra:
            return no(False, extra)
        return Verdict(True)

    memory: dict[str, int] = {}
    too_big = {"lora": "", "full": ""}
    if model.parameters:
        node = training_node()
        available = node.memory
        memory["available"] = available
        for kind in ("lora", "full"):
            memory[kind] = memory_needed(model.parameters, kind, bf16=node.bf16)
            if memory[kind] > available:
                too_big[kind] = _(
                    "Needs about %(need)s of memory to train (%(params)s parameters); the training node has %(have)s."
                ) % {"need": _gib(memory[kind]), "params": f"{model.parameters:,}", "have": _gib(available)}

    not_offered_method = _("Not offered for this model.")
    return Capabilities(
        sft=verdict("sft" in model.methods, not_offered_method),
        dpo=verdict("dpo" in model.methods, not_offered_method),
        lora=verdict("lora" in model.training_types, not_offered_method, too_big["lora"]),
        full=verdict("full" in model.training_types, not_offered_method, too_big["full"]),
        serve=verdict(True, "", ""),
        architecture=architecture or "",
        memory=memory,
        blocker=blocker,
    )
