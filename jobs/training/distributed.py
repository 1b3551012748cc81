"""Training on several GPUs through ``accelerate`` (one process per GPU, data parallel).

``accelerate launch --num_processes N -m jobs.training.distributed SPEC.json`` runs :func:`engine.train`
in N processes (``TrainingConfig.distributed``: on when ``WORLD_SIZE`` > 1). Each process takes its
share of every step's examples; the gradients are averaged by accelerate's DistributedDataParallel
wrapper, so every process holds the same weights after each step. Only the main process reports
and writes checkpoints. The same code runs with one process (the test on a CPU).

SPEC.json: ``{"model_dir", "train_file", "eval_file" (JSONL, optional), "output_dir", "config"
(TrainingConfig fields), "events" (a JSONL file the main process appends events and metrics to),
"stop" (a file whose existence cancels the run)}``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


class Accelerated:
    """The accelerate side of a run: the wrapped forward, collectives, and who reports."""

    def __init__(self):
        from accelerate import Accelerator

        # on a machine without CUDA, several processes are accelerate's MULTI_CPU (gloo): how this is tested
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.rank = self.accelerator.process_index
        self.world = self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.device = str(self.accelerator.device)
        self.forward = None

    def prepare(self, module: torch.nn.Module, optimizer):
        """Wrap the log-prob module (DDP when there are several processes) and the optimizer."""
        self.forward, optimizer = self.accelerator.prepare(module, optimizer)
        return optimizer

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

    def no_sync(self):
        return self.accelerator.no_sync(self.forward)

    def wait(self) -> None:
        self.accelerator.wait_for_everyone()


def _read_jsonl(path: str | None) -> list[dict] | None:
    if not path:
        return None
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def main(argv: list[str] | None = None) -> None:
    from .engine import Callbacks, TrainingConfig, train

    spec = json.loads(Path((argv or sys.argv[1:])[0]).read_text())

    class FileCallbacks(Callbacks):
        def _write(self, record: dict) -> None:
            with open(spec["events"], "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

        def event(self, level, message, data=None):
            self._write({"type": "event", "level": level, "message": message, "data": data})

        def metrics(self, data):
            self._write({"type": "metrics", "data": data})

        def checkpoint(self, epoch, path, *, step=0, complete=True):
            self._write({"type": "checkpoint", "epoch": epoch, "path": str(path), "step": step, "complete": complete})

        def should_stop(self):
            return bool(spec.get("stop")) and os.path.exists(spec["stop"])

    config = TrainingConfig(**{**spec.get("config", {}), "distributed": True})
    result = train(model_dir=Path(spec["model_dir"]), train_examples=_read_jsonl(spec["train_file"]),
                   eval_examples=_read_jsonl(spec.get("eval_file")), config=config,
                   output_dir=Path(spec["output_dir"]), callbacks=FileCallbacks())
    if spec.get("events") and int(os.environ.get("RANK", "0") or 0) == 0:
        FileCallbacks()._write({"type": "result", "data": result.to_json()})


if __name__ == "__main__":
    main()
