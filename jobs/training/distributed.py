"""Training on several GPUs through ``accelerate`` (one process per GPU).

``accelerate launch --num_processes N -m jobs.training.distributed SPEC.json`` (or ``torchrun
--nproc_per_node N -m ...``; the training worker starts it by itself, see ``jobs/runner.py``) runs
:func:`engine.train` in N processes (``TrainingConfig.distributed``: on when ``WORLD_SIZE`` > 1). Each
process takes its share of every step's examples and the gradients are averaged, so every process
holds the same weights after each step. Only the main process reports and writes checkpoints.

* LoRA: data parallel, accelerate's DistributedDataParallel wrapper (every process holds the whole
  model; what trains is a few MB).
* Full fine-tuning with several processes: FSDP2, torch's ``fully_shard``, full shard with each
  decoder layer (the model's ``_no_split_modules`` class) a unit and the rest (embeddings, final norm,
  head) the root's: parameters, gradients and AdamW moments are split across the processes, a layer's
  weights gathered only while it runs. bf16 compute with fp32 master weights and fp32 gradient
  reduction where the run is bf16 (a GPU), fp32 otherwise. A checkpoint gathers the full trainable
  weights and optimizer state on the main process and is written in the single-process layout, so a
  task may resume on a node with another number of GPUs. Why not accelerate's FSDP plugin: accelerate
  1.15 turns it on only for its GPU-like distributed types (``state.py``: MULTI_CPU keeps DDP), so the
  plugin would silently train DDP on a CPU and the sharded path could not be tested without GPUs;
  accelerate still starts the processes, places them and runs the collectives.

SPEC.json: ``{"model_dir", "train_file", "eval_file" (JSONL, optional), "output_dir", "config"
(TrainingConfig fields), "events" (a JSONL file the main process appends events and metrics to; its
mtime is touched at least every few seconds while steps run), "stop" (a file whose existence cancels
the run), "resume_from" (a checkpoint folder, optional), "acks" (optional: a folder; after reporting
a checkpoint the main process waits for a file of the checkpoint's name in it, so that whoever reads
the events may move the checkpoint away before training goes on)}``. The main process appends
``{"type": "result"}`` at the end, or ``{"type": "error", "error": class name, "message"}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch

PREFIX = "model."  # engine.TokenLogps holds the model as ``model``: the sharded root's names start so


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


class Accelerated:
    """The accelerate side of a run: the wrapped forward, collectives, and who reports."""

    def __init__(self, *, shard: bool = False):
        from accelerate import Accelerator

        # on a machine without CUDA, several processes are accelerate's MULTI_CPU (gloo): how this is tested
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.rank = self.accelerator.process_index
        self.world = self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.device = str(self.accelerator.device)
        self.sharded = shard and self.world > 1  # FSDP2 (full fine-tuning); one process has nothing to shard
        self.forward = None

    def wrap(self, module: torch.nn.Module, *, bf16: bool) -> torch.nn.Module:
        """Wrap the log-prob module: sharded (FSDP2) or DDP. Sharding replaces the parameters, so the
        optimizer is made afterwards, from the module's parameters then."""
        if self.sharded:
            self.forward = shard(module, bf16=bf16)
        else:
            self.forward = self.accelerator.prepare(module)
        return self.forward

    def prepare_optimizer(self, optimizer):
        # FSDP2's parameters are DTensors the optimizer updates shard by shard: nothing to wrap
        return optimizer if self.sharded else self.accelerator.prepare(optimizer)

    def share(self, unit_ids: list[int]) -> tuple[list[int], float]:
        """This process's examples of a step and their weight: a process left without any (a short last
        step) runs one with weight 0, since every process must take part in each gradient exchange."""
        mine = unit_ids[self.rank :: self.world]
        return (mine, 1.0) if mine else (unit_ids[:1], 0.0)

    def total(self, value: float) -> float:
        """``value`` summed over the processes."""
        if self.world == 1:
            return float(value)
        tensor = torch.tensor([float(value)], device=self.accelerator.device)
        return float(self.accelerator.reduce(tensor, reduction="sum").item())

    def any(self, flag: bool) -> bool:
        return self.total(1.0 if flag else 0.0) > 0

    @contextlib.contextmanager
    def no_sync(self):
        """Micro-batches before a step's last accumulate their gradients without an exchange."""
        if not self.sharded:
            with self.accelerator.no_sync(self.forward):
                yield
            return
        self.forward.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.forward.set_requires_gradient_sync(True)

    # a sharded run's state: full tensors on the main process, in the single-process layout

    def full_weights(self, *, trainable_only: bool) -> dict[str, torch.Tensor]:
        """The model's weights gathered on the main process (every process must call it; the others get {})."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(self.forward, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        keep = set(self._trainable_names()) if trainable_only else None
        return {name[len(PREFIX) :]: tensor for name, tensor in full.items() if keep is None or name in keep}

    def full_optimizer_state(self, optimizer) -> dict:
        """The optimizer's state gathered on the main process, keyed by parameter index as
        ``optimizer.state_dict()`` of a single process is (collective; the others get {})."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        full = get_optimizer_state_dict(
            self.forward, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        if not full:
            return {}
        index = {name: i for i, name in enumerate(self._trainable_names())}
        return {
            "state": {index[name]: value for name, value in full["state"].items()},
            "param_groups": [
                {**group, "params": [index[name] for name in group["params"]]} for group in full["param_groups"]
            ],
        }

    def load_full_state(self, weights: dict[str, torch.Tensor], optimizer, optimizer_state: dict) -> None:
        """Put a checkpoint's full trainable weights and optimizer state (single-process layout) into the
        shards; every process reads the checkpoint and keeps its part."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        names = self._trainable_names()
        options = StateDictOptions(full_state_dict=True, strict=False)
        set_model_state_dict(
            self.forward, {PREFIX + name: weights[name] for name in (n[len(PREFIX) :] for n in names)}, options=options
        )
        by_name = {
            "state": {names[i]: value for i, value in optimizer_state["state"].items()},
            "param_groups": [
                {**group, "params": [names[i] for i in group["params"]]} for group in optimizer_state["param_groups"]
            ],
        }
        set_optimizer_state_dict(self.forward, optimizer, by_name, options=options)

    def _trainable_names(self) -> list[str]:
        return [name for name, p in self.forward.named_parameters() if p.requires_grad]

    def wait(self) -> None:
        self.accelerator.wait_for_everyone()


def decoder_layers(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The wrap unit of sharding: the modules of the class(es) transformers says must not be split
    (``_no_split_modules``: the decoder layer, e.g. LlamaDecoderLayer)."""
    names = set()
    for sub in module.modules():
        names.update(getattr(sub, "_no_split_modules", None) or [])
    layers = [sub for sub in module.modules() if type(sub).__name__ in names]
    if not layers:
        raise ValueError(f"no decoder layer ({sorted(names) or 'no _no_split_modules'}) found to shard")
    return layers


def mixed_precision(*, bf16: bool):
    """bf16 compute with fp32 master weights and fp32 gradient reduction; else all fp32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if bf16:
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard(module: torch.nn.Module, *, bf16: bool) -> torch.nn.Module:
    """FSDP2 full shard, in place: each decoder layer a unit (its weights freed again after its forward),
    the root holding the rest."""
    from torch.distributed.fsdp import fully_shard

    policy = mixed_precision(bf16=bf16)
    for layer in decoder_layers(module):
        fully_shard(layer, mp_policy=policy, reshard_after_forward=True)
    return fully_shard(module, mp_policy=policy, reshard_after_forward=True)


def _die_with_parent() -> None:
    """Linux: this process is killed when the one that started it dies (a worker killed outright must
    not leave its training processes running)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _read_jsonl(path: str | None) -> list[dict] | None:
    if not path:
        return None
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def main(argv: list[str] | None = None) -> None:
    from .engine import Callbacks, TrainingConfig, train

    _die_with_parent()
    spec = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    main_process = int(os.environ.get("RANK", "0") or 0) == 0

    class FileCallbacks(Callbacks):
        touched = 0.0

        def _write(self, record: dict) -> None:
            with open(spec["events"], "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

        def event(self, level, message, data=None):
            self._write({"type": "event", "level": level, "message": message, "data": data})

        def metrics(self, data):
            self._write({"type": "metrics", "data": data})

        def checkpoint(self, epoch, path, *, step=0, complete=True):
            self._write({"type": "checkpoint", "epoch": epoch, "path": str(path), "step": step, "complete": complete})
            if spec.get("acks"):  # the reader moves the checkpoint away (to storage) before training goes on
                ack = Path(spec["acks"]) / Path(path).name
                while not ack.exists() and not self.should_stop():
                    time.sleep(0.05)

        def should_stop(self):
            now = time.monotonic()
            if spec.get("events") and now - self.touched >= 1.0:  # a sign of life for the reader's stuck watch
                Path(spec["events"]).touch()
                self.touched = now
            return bool(spec.get("stop")) and os.path.exists(spec["stop"])

    config = TrainingConfig(**{**spec.get("config", {}), "distributed": True})
    try:
        result = train(
            model_dir=Path(spec["model_dir"]),
            train_examples=_read_jsonl(spec["train_file"]),
            eval_examples=_read_jsonl(spec.get("eval_file")),
            config=config,
            output_dir=Path(spec["output_dir"]),
            callbacks=FileCallbacks(),
            resume_from=Path(spec["resume_from"]) if spec.get("resume_from") else None,
        )
    except Exception as exc:
        if spec.get("events") and main_process:  # what the reader raises again (engine's exception classes)
            FileCallbacks()._write({"type": "error", "error": type(exc).__name__, "message": str(exc)})
        raise
    if spec.get("events") and main_process:
        FileCallbacks()._write({"type": "result", "data": result.to_json()})


if __name__ == "__main__":
    main()
