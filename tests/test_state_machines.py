"""One state machine per entity (issue 18 item 1): each table refuses a transition it does not list, changing
nothing, and no module but the entity's state module writes its status (read statically, like
tests/test_architecture.py reads imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.utils import timezone

from common.states import IllegalTransition, StateMachine
from datasets.models import Status as DatasetStatus
from datasets.states import DATASET
from deployments.exports import EXPORT
from deployments.models import Deployment, DeploymentStatus, ExportStatus, Instance, InstanceState, Node
from deployments.states import DEPLOYMENT, INSTANCE, instance_move
from experience.models import EvaluationStatus
from experience.services import EVALUATION
from jobs.models import FineTuningJob, JobStatus
from jobs.states import JOB
from notifications.models import OutboxStatus
from notifications.services import OUTBOX

from .jobs_support import chat_lines, make_dataset

ROOT = Path(__file__).resolve().parent.parent
APPS = ["console", "notifications", "modelcards", "datasets", "jobs", "deployments", "experience"]
STATE_FIELDS = {"status", "state"}

# The one module that writes each entity's state. The task, the dataset, the deployment and the instance have a
# states module; an entity whose state has a single writer module keeps it there, with its table.
HOMES = {
    "jobs/states.py": "FineTuningJob.status",
    "datasets/states.py": "Dataset.status",
    "deployments/states.py": "Deployment.status, Instance.state",
    "deployments/exports.py": "MergedExport.status (its only writer, through EXPORT)",
    "experience/services.py": "Evaluation.status (its only writer, through EVALUATION)",
    "notifications/services.py": "OutboxMessage.status (its only writer, through OUTBOX)",
}


def status_writes(path: Path) -> list[tuple[int, str]]:
    """Where a module writes a status or state: ``x.status = ...``, ``.update(status=...)`` (and create,
    update_or_create, get_or_create), ``save(update_fields=[..."status"...])``. ``self.status`` (an object's own
    attribute, such as an HTTP status) is not an entity's state."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for el in target.elts if isinstance(target, ast.Tuple) else [target]:
                    if (
                        isinstance(el, ast.Attribute)
                        and el.attr in STATE_FIELDS
                        and not (isinstance(el.value, ast.Name) and el.value.id == "self")
                    ):
                        found.append((node.lineno, f".{el.attr} ="))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            for kw in node.keywords:
                if name in {"update", "create", "update_or_create", "get_or_create"} and kw.arg in STATE_FIELDS:
                    found.append((node.lineno, f"{name}({kw.arg}=...)"))
                if name == "save" and kw.arg == "update_fields" and isinstance(kw.value, ast.List | ast.Tuple):
                    if any(isinstance(e, ast.Constant) and e.value in STATE_FIELDS for e in kw.value.elts):
                        found.append((node.lineno, "save(update_fields=[status])"))
    return found


def stray_writes() -> list[str]:
    out = []
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if "/migrations/" in rel or rel in HOMES:
                continue
            out += [f"{rel}:{lineno} {what}" for lineno, what in status_writes(path)]
    return out


def test_only_the_state_modules_write_a_status():
    assert stray_writes() == []


def test_the_scan_catches_a_status_written_elsewhere():
    probe = ROOT / "jobs" / "_state_probe.py"
    probe.write_text(
        "def f(job, qs):\n    job.status = 'queued'\n    qs.update(status='running')\n"
        "    job.save(update_fields=['status'])\n"
    )
    try:
        found = stray_writes()
    finally:
        probe.unlink()
    assert {
        "jobs/_state_probe.py:2 .status =",
        "jobs/_state_probe.py:3 update(status=...)",
        "jobs/_state_probe.py:4 save(update_fields=[status])",
    } <= set(found)


def test_the_runner_uses_no_private_helper_of_services():
    tree = ast.parse((ROOT / "jobs" / "runner.py").read_text(encoding="utf-8"))
    private = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "services"
        for alias in node.names
        if alias.name.startswith("_")
    ]
    assert private == []


@pytest.mark.parametrize(
    "machine, enum",
    [
        (JOB, JobStatus),
        (DATASET, DatasetStatus),
        (DEPLOYMENT, DeploymentStatus),
        (INSTANCE, InstanceState),
        (EVALUATION, EvaluationStatus),
        (EXPORT, ExportStatus),
        (OUTBOX, OutboxStatus),
    ],
)
def test_each_table_names_only_its_enum_and_ends_stay_ended(machine: StateMachine, enum):
    values = {str(v) for v in enum.values}
    assert set(machine.table) <= values
    assert all(targets <= values for targets in machine.table.values())
    for final in {"succeeded", "cancelled", "stopped"} & values:
        if machine is not DEPLOYMENT:  # a cancelled public pool is asked for again
            assert not machine.table.get(final), final


def test_an_illegal_job_transition_is_refused_and_changes_nothing(alice, tiny_base):
    from jobs import services

    job, _ = services.job_create(user=alice, base_model=tiny_base, training_dataset=make_dataset(alice, chat_lines()))
    FineTuningJob.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)
    with pytest.raises(IllegalTransition, match="FineTuningJob: succeeded → running is not an allowed transition"):
        JOB.move(job, [JobStatus.SUCCEEDED], JobStatus.RUNNING, worker="w:1")
    job.refresh_from_db()
    assert (job.status, job.worker) == (JobStatus.SUCCEEDED, "")
    # allowed, but the row is not in the state read: nothing moves
    assert JOB.move(job, [JobStatus.QUEUED], JobStatus.RUNNING, worker="w:1") == 0
    assert FineTuningJob.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED


def test_an_illegal_dataset_transition_is_refused_and_changes_nothing(alice):
    dataset = make_dataset(alice, chat_lines())
    with pytest.raises(IllegalTransition, match="Dataset: ready → validating"):
        DATASET.move(dataset, [DatasetStatus.READY], DatasetStatus.VALIDATING)
    dataset.refresh_from_db()
    assert dataset.status == DatasetStatus.READY


def test_illegal_deployment_and_instance_transitions_are_refused_and_change_nothing(alice):
    node = Node.objects.create(name="n-states", slots=1, heartbeat_at=timezone.now())
    deployment = Deployment.objects.create(owner=alice, code="dep-states", status=DeploymentStatus.FAILED)
    with pytest.raises(IllegalTransition, match="Deployment: failed → running"):
        DEPLOYMENT.set(deployment, DeploymentStatus.RUNNING)
    assert Deployment.objects.get(pk=deployment.pk).status == DeploymentStatus.FAILED

    instance = Instance.objects.create(deployment=deployment, node=node, runtime="stub", state=InstanceState.STOPPED)
    with pytest.raises(IllegalTransition, match="Instance: stopped → ready"):
        instance_move(instance, InstanceState.READY)
    assert Instance.objects.get(pk=instance.pk).state == InstanceState.STOPPED

    # compare-and-set: the agent read "starting", the reconciler has since asked it to stop; the agent's write loses
    Instance.objects.filter(pk=instance.pk).update(state=InstanceState.STARTING)
    instance.refresh_from_db()
    Instance.objects.filter(pk=instance.pk).update(state=InstanceState.STOPPING)
    assert instance_move(instance, InstanceState.READY) is False
    assert Instance.objects.get(pk=instance.pk).state == InstanceState.STOPPING


def test_a_merged_export_moves_only_by_its_table(alice, tiny_base):
    from deployments import exports
    from deployments.models import MergedExport

    from .jobs_support import make_card
    from .test_modelcards import _job

    export = MergedExport.objects.create(fine_tuned_model=make_card(_job(alice, tiny_base)))
    assert exports.EXPORT.move(export, [ExportStatus.QUEUED], ExportStatus.BUILDING) == 1
    assert exports.EXPORT.move(export, [ExportStatus.BUILDING], ExportStatus.READY, folder="exports/x") == 1
    # a late failure (a worker that lost its claim, a broker that answered late) leaves a built export as it is
    exports._fail(export.pk, "too late")
    export.refresh_from_db()
    assert (export.status, export.error) == (ExportStatus.READY, "")
    with pytest.raises(IllegalTransition, match="MergedExport: ready → queued"):
        exports.EXPORT.set(export, ExportStatus.QUEUED)
    assert MergedExport.objects.get(pk=export.pk).status == ExportStatus.READY


def test_staff_resending_leaves_a_message_a_worker_claimed_since_it_was_read(alice):
    from notifications import services
    from notifications.models import OutboxMessage

    message = OutboxMessage.objects.create(
        user=alice, event="job.succeeded", channel="email", recipient="a@example.com", title="t", body="b", key="k1"
    )
    read = OutboxMessage.objects.get(pk=message.pk)  # the admin's page, read while the message was pending
    assert OUTBOX.move(message, [OutboxStatus.PENDING], OutboxStatus.SENDING, claimed_by="w1") == 1
    assert services.outbox_resend(messages=[read]) == 0
    message.refresh_from_db()
    assert (message.status, message.claimed_by, message.key) == (OutboxStatus.SENDING, "w1", "k1")
    with pytest.raises(IllegalTransition, match="OutboxMessage: pending → sent"):
        OUTBOX.move(message, [OutboxStatus.PENDING], OutboxStatus.SENT)
