"""Serving: nodes (machines with a node agent), deployments (private instances and the public pool),
their instances (inference server processes), and a record of every gateway call."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from modelcards.models import BaseModel, FineTunedModel

from . import conf


def new_deployment_id() -> str:
    return f"dep-{secrets.token_hex(8)}"


class Node(models.Model):
    """A serving machine, registered by its node agent (``manage.py serve_node``) with heartbeats."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    hostname = models.CharField(_("host"), max_length=200, blank=True)
    runtime = models.CharField(_("runtime"), max_length=32, default="transformers")
    runtime_note = models.TextField(
        _("runtime note"), blank=True, help_text=_("Why the node serves with this runtime (a fallback's reason).")
    )
    slots = models.PositiveIntegerField(_("instance slots"), default=2)
    memory_mb = models.PositiveIntegerField(_("memory (MiB)"), default=0)
    omp_threads = models.PositiveIntegerField(_("threads per instance (OMP_NUM_THREADS)"), default=1)
    cpus = models.CharField(_("CPUs of its instances"), max_length=200, blank=True)
    enabled = models.BooleanField(_("takes new instances"), default=True)
    agent_pid = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(_("agent started"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(_("last heartbeat"), null=True, blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("serving node")
        verbose_name_plural = _("serving nodes")

    def __str__(self) -> str:
        return self.name

    @property
    def is_alive(self) -> bool:
        return self.heartbeat_at is not None and timezone.now() - self.heartbeat_at < timedelta(
            seconds=conf.node_timeout()
        )


class DeploymentStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    DEPLOYING = "deploying", _("Deploying")
    RUNNING = "running", _("Running")
    SCALING = "scaling", _("Scaling")
    FAILED = "failed", _("Failed")
    ERROR = "error", _("Error")
    CANCELLED = "cancelled", _("Cancelled")


FINAL_STATUSES = {DeploymentStatus.FAILED, DeploymentStatus.CANCELLED}


class DeploymentKind(models.TextChoices):
    PRIVATE = "private", _("Private instances")
    POOL = "pool", _("Public pool")


class DeploymentQuerySet(models.QuerySet):
    def private(self) -> DeploymentQuerySet:
        return self.filter(kind=DeploymentKind.PRIVATE)

    def owned_by(self, user) -> DeploymentQuerySet:
        return self.filter(kind=DeploymentKind.PRIVATE, owner=user)

    def active(self) -> DeploymentQuerySet:
        return self.exclude(status__in=FINAL_STATUSES)


class Deployment(models.Model):
    """N instances of one model, called by the deployment's own model code (or the public pool)."""

    public_id = models.CharField(max_length=40, unique=True, default=new_deployment_id, editable=False)
    kind = models.CharField(_("kind"), max_length=16, choices=DeploymentKind.choices, default=DeploymentKind.PRIVATE)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="deployments", null=True, blank=True
    )
    code = models.CharField(_("model code"), max_length=160, unique=True)
    base_model = models.ForeignKey(
        BaseModel, on_delete=models.PROTECT, related_name="deployments", null=True, blank=True
    )
    fine_tuned_model = models.ForeignKey(
        FineTunedModel, on_delete=models.PROTECT, related_name="deployments", null=True, blank=True
    )
    desired_instances = models.PositiveIntegerField(_("instances"), default=1)
    # The public pool of a base model scales between these by load (a minimum of 0: an idle base model gives its
    # slots back, and its next call starts one). Private deployments keep the count their owner sets.
    min_instances = models.PositiveIntegerField(_("minimum instances (pool)"), default=0)
    max_instances = models.PositiveIntegerField(_("maximum instances (pool)"), default=1)
    ready_instances = models.PositiveIntegerField(_("ready instances"), default=0)
    status = models.CharField(
        _("status"), max_length=16, choices=DeploymentStatus.choices, default=DeploymentStatus.PENDING
    )
    status_reason = models.TextField(_("why"), blank=True, help_text=_("Why the count is not reached, or the error."))
    request_id = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    first_ready_at = models.DateTimeField(_("first ready"), null=True, blank=True)
    cancelled_at = models.DateTimeField(_("cancelled"), null=True, blank=True)

    objects = DeploymentQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("deployment")
        verbose_name_plural = _("deployments")
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "request_id"], condition=~models.Q(request_id=""), name="deployment_request_id"
            ),
        ]

    def __str__(self) -> str:
        return self.code

    @property
    def model(self) -> BaseModel | FineTunedModel | None:
        return self.fine_tuned_model or self.base_model

    @property
    def model_code(self) -> str:
        model = self.model
        return model.code if model is not None else ""

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def is_pool(self) -> bool:
        return self.kind == DeploymentKind.POOL

    @property
    def served_name(self) -> str:
        """The model name its instances answer to: the deployment's code, or a pool's base model code."""
        return self.base_model.code if self.is_pool and self.base_model is not None else self.code


class InstanceState(models.TextChoices):
    STARTING = "starting", _("Starting")
    READY = "ready", _("Ready")
    UNHEALTHY = "unhealthy", _("Unhealthy")
    DRAINING = "draining", _("Draining")
    STOPPING = "stopping", _("Stopping")
    STOPPED = "stopped", _("Stopped")
    FAILED = "failed", _("Failed")


# Instances that hold a slot on their node (a process may be running).
HOLDS_SLOT = [
    InstanceState.STARTING,
    InstanceState.READY,
    InstanceState.UNHEALTHY,
    InstanceState.DRAINING,
    InstanceState.STOPPING,
]
# Instances that count towards a deployment's desired count.
COUNTS = [InstanceState.STARTING, InstanceState.READY]
DONE = [InstanceState.STOPPED, InstanceState.FAILED]


class Instance(models.Model):
    """One inference server process of a deployment, on a node."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="instances")
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="instances")
    runtime = models.CharField(_("runtime"), max_length=32)
    state = models.CharField(_("state"), max_length=16, choices=InstanceState.choices, default=InstanceState.STARTING)
    upstream_model = models.CharField(
        _("model name at the server"), max_length=500, blank=True, help_text=_("Empty: the request names a folder.")
    )
    host = models.CharField(max_length=200, default="127.0.0.1")
    port = models.PositiveIntegerField(null=True, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    api_key = models.CharField(max_length=64, blank=True)
    log_path = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    load_failed = models.BooleanField(default=False, help_text=_("It exited or timed out before its first health."))
    health_failures = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    drain_started_at = models.DateTimeField(null=True, blank=True)
    stop_requested_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        verbose_name = _("instance")
        verbose_name_plural = _("instances")
        indexes = [models.Index(fields=["deployment", "state"]), models.Index(fields=["node", "state"])]

    def __str__(self) -> str:
        return f"{self.deployment.code}#{self.pk}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def uptime(self) -> timedelta | None:
        if self.ready_at is None or self.state in DONE:
            return None
        return timezone.now() - self.ready_at

    def log_tail(self, lines: int = 30, max_bytes: int = 16384) -> str:
        if not self.log_path:
            return ""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, 2)
                size = f.tell()
                f.seek(max(0, size - max_bytes))
                data = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(data.splitlines()[-lines:])


class DeploymentEvent(models.Model):
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(auto_now_add=True)
    level = models.CharField(max_length=8, default="info")
    message = models.TextField()

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.message


class ApiCall(models.Model):
    """One call through the gateway: who, which model code, tokens, latency (the usage page reads these)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_calls")
    model = models.CharField(_("model code"), max_length=160)
    deployment = models.ForeignKey(Deployment, on_delete=models.SET_NULL, related_name="calls", null=True, blank=True)
    instance = models.ForeignKey(Instance, on_delete=models.SET_NULL, related_name="calls", null=True, blank=True)
    request_id = models.CharField(max_length=128, blank=True)
    stream = models.BooleanField(default=False)
    status_code = models.PositiveIntegerField(default=200)
    error = models.TextField(blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.FloatField(_("latency (ms)"), default=0)
    ttft_ms = models.FloatField(_("time to first token (ms)"), null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = _("API call")
        verbose_name_plural = _("API calls")
        indexes = [models.Index(fields=["user", "created_at"])]

    def __str__(self) -> str:
        return f"{self.model} {self.status_code}"


class ExportStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    BUILDING = "building", _("Building")
    READY = "ready", _("Ready")
    FAILED = "failed", _("Failed")


class MergedExport(models.Model):
    """A LoRA fine-tune merged into its base, for download: built once by a worker into storage (``folder``),
    kept until the fine-tune is deleted (deployments.exports)."""

    fine_tuned_model = models.OneToOneField(FineTunedModel, on_delete=models.CASCADE, related_name="merged_export")
    status = models.CharField(_("status"), max_length=16, choices=ExportStatus.choices, default=ExportStatus.QUEUED)
    error = models.TextField(_("why it failed"), blank=True)
    folder = models.CharField(_("files"), max_length=500, blank=True)
    size_bytes = models.BigIntegerField(_("size"), default=0)
    created_at = models.DateTimeField(_("asked for"), auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)

    class Meta:
        verbose_name = _("merged model export")
        verbose_name_plural = _("merged model exports")

    def __str__(self) -> str:
        return f"{self.fine_tuned_model.code} ({self.status})"
