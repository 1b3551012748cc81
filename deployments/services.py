"""Deployment state changes: create, scale, cancel, and the reconciler that makes instances match.

The database says what should run; node agents make it so on their machines; ``deployment_reconcile`` (Celery
beat every few seconds, and at once after each change) compares each deployment's desired count with its
instances: it places new ones on nodes with room, drains surplus ones, replaces dead or unhealthy ones, and says
why a count cannot be reached.
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from accounts.quotas import QuotaExceeded, quota_enforce
from common.error_codes import InputError
from common.queueing import enqueue_on_commit
from modelcards.models import BaseModel, FineTunedModel
from modelcards.weights import WeightsMissing

from . import conf, states
from .models import (
    COUNTS,
    HOLDS_SLOT,
    Deployment,
    DeploymentKind,
    DeploymentStatus,
    Instance,
    InstanceState,
    Node,
)
from .runtimes import get_runtime
from .states import event
from .states import notify_owner as _notify
from .targets import target_of

logger = logging.getLogger(__name__)

MAX_INSTANCES = 16
POOL_PREFIX = "public-pool:"  # a pool's code: the prefix and its base model's code
# Instances of a running deployment that fail to start in a row before it is marked ``error``.
MAX_START_FAILURES = 3
# Seconds after the last of those failures before a deployment in ``error`` tries again.
RETRY_AFTER_ERROR = 60


class DeploymentInputError(InputError):
    """A request to deploy or scale that cannot be honoured; ``param`` names the field."""


def _enqueue_reconcile(deployment_id: int) -> None:
    # lost: beat's periodic reconcile (and the node agent) catch up
    enqueue_on_commit("deployments.reconcile", deployment_id)


# ---------------------------------------------------------------- models a user may deploy


def deployable_model(*, user, code: str) -> BaseModel | FineTunedModel:
    """The base model or the user's own live fine-tune called ``code``, or DeploymentInputError."""
    fine_tune = FineTunedModel.objects.live().filter(code=code).select_related("base_model").first()
    if fine_tune is not None and fine_tune.owner_id == user.pk:
        model = fine_tune
    else:
        model = BaseModel.objects.usable_by(user).filter(code=code).first()
    if model is None:
        raise DeploymentInputError(
            _("No model %(code)s that you can deploy.") % {"code": code}, "model", code="model_not_found"
        )
    base = model if isinstance(model, BaseModel) else model.base_model
    verdict = base.capabilities().serve
    if not verdict:
        raise DeploymentInputError(verdict.reason, "model", code="model_not_servable")
    try:
        target_of(model)
    except WeightsMissing as exc:
        raise DeploymentInputError(
            _("Weights missing: %(why)s") % {"why": exc}, "model", code="weights_missing"
        ) from None
    return model


def deployment_code(model: BaseModel | FineTunedModel) -> str:
    """A model code of the deployment's own, unique, never a base model's or a fine-tune's."""
    stem = slugify(model.code.replace(":", "-"))[:120] or "model"
    while True:
        code = f"{stem}-dep-{secrets.token_hex(3)}"
        if not (
            Deployment.objects.filter(code=code).exists()
            or BaseModel.objects.filter(code=code).exists()
            or FineTunedModel.objects.filter(code=code).exists()
        ):
            return code


def _check_count(instances, *, allow_zero: bool = False) -> int:
    try:
        count = int(instances)
    except (TypeError, ValueError, OverflowError):
        raise DeploymentInputError(_("instances must be a whole number."), "instances") from None
    low = 0 if allow_zero else 1
    if not low <= count <= MAX_INSTANCES:
        raise DeploymentInputError(
            _("instances must be between %(min)s and %(max)s.") % {"min": low, "max": MAX_INSTANCES}, "instances"
        )
    return count


def deployment_check_quota(*, user) -> None:
    """The user's limit of deployments not cancelled (USER_MAX_DEPLOYMENTS, or their own set in the admin)."""
    try:
        quota_enforce(user=user, name="deployments", used_qs=Deployment.objects.owned_by(user).active())
    except QuotaExceeded as exc:
        raise DeploymentInputError(exc.message, code="quota_exceeded") from None


def deployment_create(
    *, user, model: BaseModel | FineTunedModel, instances: int = 1, request_id: str = ""
) -> Deployment:
    """Create a deployment of ``model`` with ``instances`` instances (idempotent on ``request_id``)."""
    count = _check_count(instances)
    if request_id:
        existing = Deployment.objects.filter(owner=user, request_id=request_id).first()
        if existing is not None:
            return existing
    fields = (
        {"base_model": model}
        if isinstance(model, BaseModel)
        else {"fine_tuned_model": model, "base_model": model.base_model}
    )
    try:
        with transaction.atomic():
            deployment_check_quota(user=user)
            deployment = Deployment.objects.create(
                owner=user, code=deployment_code(model), desired_instances=count, request_id=request_id, **fields
            )
            event(
                deployment,
                ngettext(
                    "Created with %(n)s instance of %(model)s.", "Created with %(n)s instances of %(model)s.", count
                )
                % {"n": count, "model": model.code},
            )
            _enqueue_reconcile(deployment.pk)
    except IntegrityError:
        existing = Deployment.objects.filter(owner=user, request_id=request_id).first() if request_id else None
        if existing is None:
            raise
        return existing
    return deployment


def deployment_scale(*, deployment: Deployment, instances: int) -> Deployment:
    count = _check_count(instances)
    with transaction.atomic():
        locked = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if locked.is_final:
            raise DeploymentInputError(
                _("This deployment is %(status)s; create a new one.") % {"status": locked.get_status_display().lower()},
                "instances",
                code="deployment_final",
            )
        if locked.desired_instances != count:
            event(
                locked,
                ngettext("Scaled from %(old)s to %(new)s instance.", "Scaled from %(old)s to %(new)s instances.", count)
                % {"old": locked.desired_instances, "new": count},
            )
            locked.desired_instances = count
            if locked.is_pool:  # an operator's count for a pool is its new minimum (the load scales above it)
                locked.min_instances, locked.max_instances = count, max(count, locked.max_instances)
            states.deployment_scaling(locked, fields=["desired_instances", "min_instances", "max_instances"])
            _enqueue_reconcile(locked.pk)
    return locked


def deployment_cancel(*, deployment: Deployment, reason: str = "") -> Deployment:
    """Cancel at once: from this commit its code answers 404; its processes stop in the background."""
    with transaction.atomic():
        locked = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if locked.status == DeploymentStatus.CANCELLED:
            return locked
        states.deployment_cancelled(locked, reason=reason)
    return locked


def deployments_cancel_for_model(*, model: FineTunedModel) -> int:
    """Cancel every deployment of a fine-tuned model (its card was deleted)."""
    count = 0
    for deployment in Deployment.objects.filter(fine_tuned_model=model).exclude(status=DeploymentStatus.CANCELLED):
        deployment_cancel(
            deployment=deployment, reason=_("Cancelled: the model %(code)s was deleted.") % {"code": model.code}
        )
        count += 1
    return count


# ---------------------------------------------------------------- serving folders, built ahead of the first call


def fine_tune_prepare(*, fine_tuned_model_id: int) -> None:
    """Merge a new LoRA fine-tune into its base once, now, so that its first deploy or pool call does not wait for
    it (in a child process: the worker does not keep torch and the model in memory afterwards)."""
    import subprocess
    import sys
    from pathlib import Path

    from .targets import is_prepared

    model = FineTunedModel.objects.live().filter(pk=fine_tuned_model_id).select_related("base_model").first()
    if model is None or not model.is_lora:
        return
    if not alive_nodes().exclude(runtime="vllm").exists():
        return  # vLLM serves the adapter itself: no merged copy is made
    try:
        if is_prepared(target_of(model)):
            return
    except WeightsMissing:
        return
    result = subprocess.run(
        [sys.executable, "-m", "deployments.launch", "--prepare", model.code],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        logger.warning("preparing %s failed: %s", model.code, result.stdout[-2000:] + result.stderr[-2000:])


def adapter_unload_everywhere(*, code: str) -> int:
    """A deleted LoRA fine-tune leaves every pool instance that held it (deployments/adapters.py)."""
    from .adapters import unload_everywhere

    return unload_everywhere(code)


def on_fine_tuned_model_saved(sender, instance: FineTunedModel, created: bool, **kwargs) -> None:
    # A checkpoint's model is merged at its first call instead: a task has several, most never called.
    if created and instance.is_lora and instance.deleted_at is None and not instance.is_checkpoint:
        enqueue_on_commit("deployments.prepare_fine_tune", instance.pk)  # lost: the first call merges it instead


# ---------------------------------------------------------------- the public pool


def pool_code(base: BaseModel) -> str:
    return f"{POOL_PREFIX}{base.code}"


def pool_deployment(base: BaseModel) -> Deployment:
    """The platform-owned deployment whose instances serve ``base`` and its LoRA fine-tunes without a deployment
    (one per base model; made at the first need, between SERVING_POOL_INSTANCES and SERVING_POOL_MAX_INSTANCES
    instances, which operators change in the admin)."""
    pool = Deployment.objects.filter(kind=DeploymentKind.POOL, code=pool_code(base)).first()
    if pool is None:
        low = conf.pool_instances()
        try:
            with transaction.atomic():
                pool = Deployment.objects.create(
                    kind=DeploymentKind.POOL,
                    code=pool_code(base),
                    base_model=base,
                    desired_instances=low,
                    min_instances=low,
                    max_instances=max(low, conf.pool_max_instances()),
                )
                event(
                    pool,
                    ngettext(
                        "Public pool of %(model)s created: %(low)s to %(high)s instance.",
                        "Public pool of %(model)s created: %(low)s to %(high)s instances.",
                        pool.max_instances,
                    )
                    % {"model": base.code, "low": pool.min_instances, "high": pool.max_instances},
                )
                _enqueue_reconcile(pool.pk)
        except IntegrityError:
            pool = Deployment.objects.get(kind=DeploymentKind.POOL, code=pool_code(base))
    elif pool.status == DeploymentStatus.CANCELLED:  # stopped by an operator earlier: called again, it comes back
        states.pool_revived(pool)
        pool.refresh_from_db()
        _enqueue_reconcile(pool.pk)
    return pool


def pools_ensure() -> None:
    """A pool for every active base model whose weights are on this server (its minimum starts at once)."""
    have = set(
        Deployment.objects.filter(kind=DeploymentKind.POOL, base_model__isnull=False).values_list(
            "base_model_id", flat=True
        )
    )
    for base in BaseModel.objects.filter(is_active=True).exclude(pk__in=have):
        if base.weights_status()[0]:
            pool_deployment(base)


def pool_limits(*, pool: Deployment, low: int, high: int) -> Deployment:
    """An operator's minimum and maximum for a pool (0 to MAX_INSTANCES; the maximum at least the minimum, and 1)."""
    low = _check_count(low, allow_zero=True)
    high = max(low, 1, _check_count(high))
    with transaction.atomic():
        locked = Deployment.objects.select_for_update().get(pk=pool.pk)
        wanted = min(max(locked.desired_instances, low), high)
        event(
            locked,
            ngettext(
                "Pool limits set: %(low)s to %(high)s instance.",
                "Pool limits set: %(low)s to %(high)s instances.",
                high,
            )
            % {"low": low, "high": high},
        )
        locked.min_instances, locked.max_instances, locked.desired_instances = low, high, wanted
        locked.save(update_fields=["min_instances", "max_instances", "desired_instances", "updated_at"])
        _enqueue_reconcile(locked.pk)
    return locked


def pool_wake(pool: Deployment) -> bool:
    """A call for a pool with no instance (its minimum is 0 and it was idle): start one. True if one is starting."""
    if pool.max_instances < 1:
        return False
    woke = Deployment.objects.filter(pk=pool.pk, desired_instances=0).update(desired_instances=1)
    if woke:
        event(pool, _("A call came for %(model)s: starting an instance.") % {"model": pool.served_name})
        from common.redis import redis_client

        from . import inflight

        try:
            with redis_client(1) as client:
                inflight.pool_touch_sync(client, pool.pk)
        except Exception:
            logger.warning("could not note the call to pool %s", pool.pk)
        _enqueue_reconcile(pool.pk)
    return True


def _pool_autoscale(pool: Deployment, now) -> None:
    """Between the pool's minimum and maximum: one more instance when the ready ones each carry
    SERVING_POOL_SCALE_UP_AT calls, one fewer after SERVING_POOL_IDLE_SECONDS without a call."""
    from common.redis import redis_client

    from . import inflight

    low, high = pool.min_instances, max(pool.min_instances, pool.max_instances)
    wanted = pool.desired_instances
    ready = list(pool.instances.filter(state=InstanceState.READY).values_list("pk", flat=True))
    try:
        with redis_client(1) as client:
            busy = sum(inflight.in_flight(client, pk) for pk in ready)
            last_call = inflight.pool_last_call(client, pool.pk)
            if last_call is None:  # the idle clock starts now
                inflight.pool_touch_sync(client, pool.pk)
                last_call = now.timestamp()
    except Exception:  # Redis away: keep the count as it is
        return
    message = ""
    idle = conf.pool_idle_seconds()
    if ready and wanted <= len(ready) and busy >= len(ready) * conf.pool_scale_up_at() and wanted < high:
        wanted += 1
        message = _("%(calls)s in flight on %(instances)s: starting one more.") % {
            "calls": ngettext("%(n)s call", "%(n)s calls", busy) % {"n": busy},
            "instances": ngettext("%(n)s instance", "%(n)s instances", len(ready)) % {"n": len(ready)},
        }
    elif wanted > low and busy == 0 and (last_call is None or now.timestamp() - last_call > idle):
        wanted -= 1
        message = _("No call for %(s)s s: stopping one instance.") % {"s": int(idle)}
    wanted = min(max(wanted, low), high)
    if wanted != pool.desired_instances:
        pool.desired_instances = wanted
        pool.save(update_fields=["desired_instances", "updated_at"])
        event(pool, message or _("Instances set to %(n)s (between the pool's minimum and maximum).") % {"n": wanted})


# ---------------------------------------------------------------- reconciliation


def alive_nodes():
    cutoff = timezone.now() - timedelta(seconds=conf.node_timeout())
    return Node.objects.filter(heartbeat_at__gte=cutoff)


def _place(deployment: Deployment, needed: int) -> tuple[int, str]:
    """Create up to ``needed`` instances on nodes with room; return how many, and why not all."""
    nodes = list(
        alive_nodes().filter(enabled=True).annotate(used=Count("instances", filter=Q(instances__state__in=HOLDS_SLOT)))
    )
    if not nodes:
        return 0, _("No serving node is running: start one (./run up starts a node agent, or manage.py serve_node).")
    target = target_of(deployment.model)  # a pool's: its base model
    placed = 0
    for _i in range(needed):
        nodes.sort(key=lambda n: n.used - n.slots)  # most free first
        node = nodes[0]
        if node.used >= node.slots:
            break
        runtime = get_runtime(node.runtime)
        Instance.objects.create(
            deployment=deployment,
            node=node,
            runtime=runtime.name,
            upstream_model=runtime.upstream_model(
                target=target, served_name=deployment.served_name, pool=deployment.is_pool
            ),
            api_key=secrets.token_urlsafe(24),
        )
        node.used += 1
        placed += 1
    if placed < needed:
        slots = sum(n.slots for n in nodes)
        return placed, _("No serving node has room: %(nodes)s, %(slots)s, all in use.") % {
            "nodes": ngettext("%(n)s node", "%(n)s nodes", len(nodes)) % {"n": len(nodes)},
            "slots": ngettext("%(n)s slot", "%(n)s slots", slots) % {"n": slots},
        }
    return placed, ""


def deployment_reconcile(*, deployment_id: int) -> Deployment | None:
    """Make one deployment's instances match its desired count, and set its status from what is ready."""
    now = timezone.now()
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().filter(pk=deployment_id).first()
        if deployment is None:
            return None
        instances = deployment.instances
        if deployment.is_final:
            states.instances_stop(instances.all(), now)
            return deployment

        # Instances on a node that stopped answering are lost: replaced elsewhere (the agent kills them on return).
        cutoff = now - timedelta(seconds=conf.node_timeout())
        for lost in instances.filter(state__in=HOLDS_SLOT).filter(
            Q(node__heartbeat_at__lt=cutoff) | Q(node__heartbeat_at__isnull=True)
        ):
            if not states.instance_move(
                lost,
                InstanceState.FAILED,
                stopped_at=now,
                error=lost.error or _("Node %(node)s stopped answering.") % {"node": lost.node.name},
            ):
                continue
            event(
                deployment,
                _("Instance %(id)s lost with node %(node)s; replacing it.") % {"id": lost.pk, "node": lost.node.name},
                "warning",
            )
            _notify(deployment, "deployment.instance_replaced")
        for sick in instances.filter(state=InstanceState.UNHEALTHY):
            if not states.instance_move(sick, InstanceState.STOPPING, stop_requested_at=now):
                continue
            event(
                deployment,
                _("Instance %(id)s is unhealthy (%(why)s); replacing it.")
                % {"id": sick.pk, "why": sick.error or _("no reason given")},
                "warning",
            )
            _notify(deployment, "deployment.instance_replaced")

        # A load failure: before the first ready instance it fails the deployment; afterwards, repeated ones.
        recent = list(instances.order_by("-id")[:MAX_START_FAILURES])
        start_failures = [i for i in recent if i.state == InstanceState.FAILED and i.load_failed]
        never_ready = deployment.first_ready_at is None and not deployment.is_pool
        if start_failures and (never_ready or len(start_failures) >= MAX_START_FAILURES):
            reason = start_failures[0].error
            backoff_over = (start_failures[0].stopped_at or now) < now - timedelta(seconds=RETRY_AFTER_ERROR)
            if never_ready or not backoff_over:
                states.deployment_start_failed(deployment, reason=reason, never_ready=never_ready)
                return deployment

        if deployment.is_pool:
            _pool_autoscale(deployment, now)
        live = list(instances.filter(state__in=COUNTS).order_by("id"))
        reason = ""
        if len(live) < deployment.desired_instances:
            placed, reason = _place(deployment, deployment.desired_instances - len(live))
            if placed:
                event(
                    deployment,
                    ngettext("Starting %(n)s instance.", "Starting %(n)s instances.", placed) % {"n": placed},
                )
        elif len(live) > deployment.desired_instances:
            surplus = len(live) - deployment.desired_instances
            # Not-yet-ready ones go first, then the newest ready ones.
            chosen = [i for i in live if i.state != InstanceState.READY][:surplus]
            chosen += [i for i in sorted(live, key=lambda i: -i.id) if i.state == InstanceState.READY][
                : surplus - len(chosen)
            ]
            for inst in chosen:
                if inst.state == InstanceState.READY:
                    states.instance_move(inst, InstanceState.DRAINING, drain_started_at=now)
                else:
                    states.instance_move(inst, InstanceState.STOPPING, stop_requested_at=now)
            event(
                deployment,
                ngettext("Draining %(n)s surplus instance.", "Draining %(n)s surplus instances.", len(chosen))
                % {"n": len(chosen)},
            )

        ready = instances.filter(state=InstanceState.READY).count()
        starting = instances.filter(state=InstanceState.STARTING).count()
        states.deployment_settled(deployment, ready=ready, starting=starting, reason=reason)
    return deployment


def reconcile_all() -> int:
    """Reconcile every deployment that is not final, the public pools included (beat runs this)."""
    try:
        pools_ensure()
    except Exception:
        logger.exception("making the public pools failed")
    ids = list(Deployment.objects.active().values_list("pk", flat=True))
    # Cancelled ones whose processes are not all gone yet.
    ids += list(
        Deployment.objects.filter(status__in=[DeploymentStatus.CANCELLED, DeploymentStatus.FAILED])
        .filter(
            instances__state__in=[
                InstanceState.STARTING,
                InstanceState.READY,
                InstanceState.UNHEALTHY,
                InstanceState.DRAINING,
            ]
        )
        .values_list("pk", flat=True)
        .distinct()
    )
    for pk in ids:
        try:
            deployment_reconcile(deployment_id=pk)
        except Exception:
            logger.exception("reconciling deployment %s failed", pk)
    return len(ids)
