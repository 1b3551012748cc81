""":func:`engine.train` in N processes (one per GPU), driven like the in-process call.

:func:`train_in_processes` takes :func:`engine.train`'s arguments and returns its result: it writes the
data and a SPEC.json (``distributed.py``) into a work folder, starts ``torchrun --standalone
--nproc_per_node N -m jobs.training.distributed SPEC.json`` and relays what the main process appends to
the events file into the same :class:`engine.Callbacks` the in-process run calls:

* events, metrics and checkpoints in order; a checkpoint is acknowledged (the training waits) only once
  ``callbacks.checkpoint`` has returned, so the caller may move the folder away as it does in-process;
* ``callbacks.should_stop()`` is polled each time the processes poll theirs (the main process touches the
  events file when it does): the caller's watch of progress sees the processes' progress, and True
  writes the stop file, which stops every process at its next step;
* the end: a ``result`` record returns a :class:`engine.TrainingResult`; an ``error`` record raises the
  engine's exception again (TrainingCancelled, TrainingDataError, CheckpointError, MemoryError, ...);
  processes that exit without either (killed, a crash in another rank) raise :class:`ProcessesFailed`
  with the tail of their output, unless a stop was asked for (TrainingCancelled).

The processes run in a session of their own, so a SIGTERM meant for the caller's process group (a
worker being stopped) reaches them as the stop file, after the caller decides; each dies with its
parent (PR_SET_PDEATHSIG), so a caller killed outright leaves no training behind.

No Django here: ``jobs/runner.py`` calls it with the task's callbacks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from common.processes import stop_group

from . import engine

ROOT = Path(__file__).resolve().parents[2]  # where ``-m jobs.training.distributed`` is found
POLL_SECONDS = 0.1
STOP_GRACE_SECONDS = 60.0  # after the stop file, before the processes are terminated


class ProcessesFailed(RuntimeError):
    """The training processes ended without a result or an error of the engine's."""


_ERRORS = {
    cls.__name__: cls
    for cls in (
        engine.TrainingCancelled,
        engine.TrainingDataError,
        engine.CheckpointError,
        MemoryError,
        FloatingPointError,
        ValueError,
    )
}


def _write_jsonl(path: Path, examples: Sequence[dict]) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        for example in examples:
            fh.write(json.dumps(example, ensure_ascii=False) + "\n")
    return str(path)


def train_in_processes(
    processes: int,
    *,
    workdir: Path,
    model_dir: Path,
    train_examples: Sequence[dict],
    eval_examples: Sequence[dict] | None,
    config: engine.TrainingConfig,
    output_dir: Path,
    callbacks: engine.Callbacks,
    resume_from: Path | None = None,
) -> engine.TrainingResult:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if config.num_threads is None and not config.device:  # the processes share the machine's cores
        config = replace(config, num_threads=max(1, engine.physical_cores() // processes))
    events, stop, acks = workdir / "events.jsonl", workdir / "stop", workdir / "acks"
    for leftover in (events, stop):
        leftover.unlink(missing_ok=True)
    acks.mkdir(exist_ok=True)
    spec = {
        "model_dir": str(model_dir),
        "train_file": _write_jsonl(workdir / "train.jsonl", train_examples),
        "eval_file": _write_jsonl(workdir / "eval.jsonl", eval_examples) if eval_examples else None,
        "output_dir": str(output_dir),
        "config": {k: v for k, v in asdict(config).items() if k != "distributed"},
        "events": str(events),
        "stop": str(stop),
        "acks": str(acks),
        "resume_from": str(resume_from) if resume_from else None,
    }
    (workdir / "spec.json").write_text(json.dumps(spec))
    events.touch()
    log_path = workdir / "processes.log"
    command = [
        sys.executable,
        "-m",
        "jobs.training.launch",
        "--standalone",
        "--nproc_per_node",
        str(processes),
        "-m",
        "jobs.training.distributed",
        str(workdir / "spec.json"),
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return _relay(proc, events, stop, acks, callbacks, log_path)
    finally:
        _end(proc, stop)


def _relay(proc, events: Path, stop: Path, acks: Path, callbacks, log_path: Path) -> engine.TrainingResult:
    offset, seen, outcome = 0, 0, None
    stop_asked = False
    while True:
        exited = proc.poll() is not None
        with open(events, encoding="utf-8") as fh:
            fh.seek(offset)
            chunk = fh.read()
        complete = chunk[: chunk.rfind("\n") + 1]  # a line still being written waits for the next poll
        offset += len(complete.encode("utf-8"))
        for line in complete.splitlines():
            record = json.loads(line)
            kind = record["type"]
            if kind == "event":
                callbacks.event(record["level"], record["message"], record.get("data"))
            elif kind == "metrics":
                callbacks.metrics(record["data"])
            elif kind == "checkpoint":
                path = Path(record["path"])
                callbacks.checkpoint(record["epoch"], path, step=record["step"], complete=record["complete"])
                (acks / path.name).touch()
            elif kind in ("result", "error"):
                outcome = record
        mtime = events.stat().st_mtime_ns
        if mtime != seen and not stop_asked:  # the processes polled for a stop: so does the caller
            seen = mtime
            if callbacks.should_stop():
                stop.touch()
                stop_asked = True
        if exited:
            break
        time.sleep(POLL_SECONDS)
    if outcome is not None and outcome["type"] == "result" and proc.returncode == 0:
        data = outcome["data"]
        return engine.TrainingResult(**{**data, "output_dir": Path(data["output_dir"])})
    if outcome is not None and outcome["type"] == "error":
        raise _ERRORS.get(outcome["error"], RuntimeError)(
            outcome["message"] if outcome["error"] in _ERRORS else f"{outcome['error']}: {outcome['message']}"
        )
    if stop_asked or callbacks.should_stop():
        raise engine.TrainingCancelled("training cancelled")
    tail = log_path.read_text(errors="replace")[-3000:].strip()
    raise ProcessesFailed(f"the training processes exited with status {proc.returncode}: {tail}")


def _end(proc: subprocess.Popen, stop: Path) -> None:
    """Processes still running when the relay ends (the caller's time limit, an error in a callback): the
    stop file, then SIGTERM to their session, then SIGKILL."""
    if proc.poll() is not None:
        return
    stop.touch()
    try:
        proc.wait(STOP_GRACE_SECONDS)
        return
    except subprocess.TimeoutExpired:
        pass
    stop_group(proc, grace=10, kill_wait=10)


if __name__ == "__main__":  # torchrun, dying with the process that started it
    from torch.distributed.run import main

    from .distributed import _die_with_parent

    _die_with_parent()
    main(sys.argv[1:])
