"""The state machines of deployments and their instances: every change of ``Deployment.status`` and
``Instance.state`` happens here.

Deployment (the control plane's view of a model being served)::

    pending, deploying, running, scaling, error → one another (the reconciler, from what is ready) | failed | error
                                                  | cancelled
    failed    → cancelled
    cancelled → pending (a public pool asked for again)

Instance (one server process on a node)::

    starting  → ready | failed | stopping
    ready     → ready (health counters) | unhealthy | draining | stopping | failed
    unhealthy → ready | stopping | failed
    draining  → stopping | stopped | failed
    stopping  → stopped | failed

Each transition checks the table and writes with a compare-and-set (``common.states.StateMachine``): an instance's
writers are the reconciler (deployments.services) and the node agent (deployments.agent), which run at the same
time, so each writes only if the state it read is still there. A deployment's writers hold its row locked
(``select_for_update``). The deployment's transitions also record their event and notify the owner.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from common.states import StateMachine

from . import routecache
from .models import HOLDS_SLOT, Deployment, DeploymentEvent, DeploymentStatus, Instance, InstanceState

logger = logging.getLogger(__name__)

D = DeploymentStatus
_LIVE = {D.PENDING, D.DEPLOYING, D.RUNNING, D.SCALING, D.ERROR}
DEPLOYMENT = StateMachine(
    Deployment,
    {
        **{source: _LIVE | {D.FAILED, D.CANCELLED} for source in _LIVE},
        D.FAILED: {D.CANCELLED},
        D.CANCELLED: {D.PENDING},
    },
    on_change=routecache.changed,  # the gateway's cached routes read both
)

I = InstanceState  # noqa: E741
INSTANCE = StateMachine(
    Instance,
    {
        I.STARTING: {I.READY, I.FAILED, I.STOPPING},
        I.READY: {I.READY, I.UNHEALTHY, I.DRAINING, I.STOPPING, I.FAILED},
        I.UNHEALTHY: {I.READY, I.STOPPING, I.FAILED},
        I.DRAINING: {I.STOPPING, I.STOPPED, I.FAILED},
        I.STOPPING: {I.STOPPED, I.FAILED},
        I.STOPPED: set(),
        I.FAILED: set(),
    },
    field="state",
    on_change=routecache.changed,
)
STOPPABLE = [s for s in HOLDS_SLOT if s != I.STOPPING]


# --- what deployment transitions record and notify ---------------------------------


def event(deployment: Deployment, message: str, level: str = "info") -> None:
    DeploymentEvent.objects.create(deployment=deployment, message=message, level=level)


def notify_owner(deployment: Deployment, name: str, **context) -> None:
    """Tell the owner (notifications: in-app, and email/SMS as their preferences say); never the pool."""
    if deployment.is_pool or deployment.owner_id is None:
        return
    from django.urls import reverse

    from notifications.services import notify

    try:
        with transaction.atomic():
            notify(
                user=deployment.owner,
                event=name,
                subject_name=deployment.model_code,
                subject_code=deployment.code,
                url=reverse("deployments:detail", args=[deployment.public_id]),
                context={k: str(v) for k, v in context.items()},
            )
    except Exception:  # a notification never stops a deployment
        logger.exception("notifying %s of %s failed", deployment.code, name)


# --- deployment transitions (the caller holds the row: select_for_update) ------------------


def deployment_scaling(locked: Deployment, *, fields) -> None:
    """Its desired count changed (``fields`` were set by the caller): a running deployment is scaling."""
    target = D.SCALING if locked.status == D.RUNNING else locked.status
    DEPLOYMENT.set(locked, target, fields=[*fields, "updated_at"])


def deployment_cancelled(locked: Deployment, *, reason: str = "") -> None:
    """→ cancelled: from this commit its code answers 404; its instances are asked to stop."""
    now = timezone.now()
    DEPLOYMENT.set(
        locked, D.CANCELLED, fields=["updated_at"], cancelled_at=now, ready_instances=0, status_reason=reason
    )
    instances_stop(locked.instances.all(), now)
    event(locked, reason or _("Cancelled."))


def pool_revived(pool: Deployment) -> bool:
    """cancelled → pending: a public pool stopped by an operator, asked for again."""
    return bool(
        DEPLOYMENT.move(
            pool, [D.CANCELLED], D.PENDING, cancelled_at=None, desired_instances=pool.min_instances, status_reason=""
        )
    )


def deployment_start_failed(deployment: Deployment, *, reason: str, never_ready: bool) -> None:
    """Instances failed to load: before the first ready one the deployment failed (its instances stop);
    afterwards it is in error (retried after a back-off)."""
    if deployment.status_reason != reason:
        event(deployment, _("Failed: %(reason)s") % {"reason": reason}, "error")
        notify_owner(deployment, "deployment.failed", error=reason[-300:])
    DEPLOYMENT.set(
        deployment,
        D.FAILED if never_ready else D.ERROR,
        fields=["updated_at"],
        status_reason=reason,
        ready_instances=deployment.instances.filter(state=I.READY).count(),
    )
    if never_ready:
        instances_stop(deployment.instances.all(), timezone.now())


def deployment_settled(deployment: Deployment, *, ready: int, starting: int, reason: str) -> None:
    """The reconciler's verdict from what is ready: running, deploying, pending or scaling; the first time it runs
    (and each time it is back to running) the owner hears of it."""
    now = timezone.now()
    if ready >= deployment.desired_instances and starting == 0:
        status = D.RUNNING
    elif deployment.first_ready_at is None:
        status = D.DEPLOYING if (ready or starting) else D.PENDING
    else:
        status = D.SCALING
    changed = status != deployment.status
    if status == D.RUNNING and deployment.first_ready_at is None:
        deployment.first_ready_at = now
        event(
            deployment,
            ngettext("Running: %(n)s instance ready.", "Running: %(n)s instances ready.", ready) % {"n": ready},
        )
        notify_owner(deployment, "deployment.ready")
    elif changed and status == D.RUNNING:
        event(
            deployment,
            ngettext("Running: %(n)s instance ready.", "Running: %(n)s instances ready.", ready) % {"n": ready},
        )
        notify_owner(deployment, "deployment.scaled", instances=ready)
    if reason and reason != deployment.status_reason:
        event(deployment, reason, "warning")
    DEPLOYMENT.set(
        deployment, status, fields=["first_ready_at", "updated_at"], ready_instances=ready, status_reason=reason
    )


# --- instance transitions (compare-and-set: the reconciler and the agent run at once) ----------------


def instance_move(instance: Instance, state: str, **fields) -> bool:
    """The instance, still in the state it was read in, goes to ``state``; a stopped or failed one gets its
    ``stopped_at``. False when another writer changed it first."""
    if state in (I.FAILED, I.STOPPED):
        fields.setdefault("stopped_at", timezone.now())
    moved = INSTANCE.move(instance, [instance.state], state, **fields)
    if moved:
        logger.info("instance %s: %s -> %s", instance.pk, instance.state, state)
        instance.state = state  # the caller's copy follows the row
    return bool(moved)


def instances_stop(instances, now) -> int:
    """Every instance of the queryset that holds a slot and is not stopping yet is asked to stop."""
    return INSTANCE.move(instances, STOPPABLE, I.STOPPING, stop_requested_at=now)


def instance_gone(instance_id: int, *, error: str) -> None:
    """Its process is gone with the agent that ran it: one asked to stop is stopped, any other failed."""
    now = timezone.now()
    INSTANCE.move(instance_id, STOPPABLE, I.FAILED, stopped_at=now, error=error)
    INSTANCE.move(instance_id, [I.STOPPING], I.STOPPED, stopped_at=now)
